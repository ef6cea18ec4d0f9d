"""The browser UI's upload against curl's, side by side: what hashing in the
page (hash-wasm's XXH3-128) and tus's 16 MiB PATCHes cost a browser user.

    python -m bench.browser_upload --size 256M --runs 5

One ``sockftp serve --http-port 0`` (a child process, as in bench.http)
takes, per run and in alternating order:

* ``curl -T``: one PUT to ``/files/`` (the server hashes it on arrival);
* ``page: hash only``: the page's own ``SockftpUploads.checksum`` of the
  picked file, in Debian's chromium (Playwright, headless);
* ``page: upload``: the whole UI path, picked file to "done, verified":
  hash, tus creation, PATCHes, the server's verify and rename.

Prints each variant's median seconds and GB/s, and the page's upload as a
share of curl's, run by run. Needs chromium, Playwright and curl.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from itertools import count

from .common import human_size, interleave, make_file, parse_size, timed
from .servers import PASSWORD, USER, SockftpServer

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("256M"))
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    curl = shutil.which("curl")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bench-browser-") as tmp:
        source = make_file(os.path.join(tmp, "source.bin"), args.size)
        with SockftpServer(os.path.join(tmp, "sockftp"), http=True) as server, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_context().new_page()
            page.set_default_timeout(600_000)
            base = f"http://127.0.0.1:{server.http_port}"
            _log_in(page, base)
            names = count()

            def curl_put() -> float:
                url = f"{base}/files/curl-{next(names)}.bin"
                login = ["-u", f"{USER}:{PASSWORD}"]
                elapsed = timed(
                    lambda: subprocess.run(
                        [curl, "-sS", "--fail", "-o", os.devnull, *login, "-T", source, url], check=True
                    )
                )
                subprocess.run([curl, "-sS", "--fail", *login, "-X", "DELETE", url], check=True)
                return elapsed

            def page_hash() -> float:
                page.set_input_files("#bench-file", source)
                return page.evaluate(
                    """async () => {
                        const file = document.getElementById("bench-file").files[0];
                        const start = performance.now();
                        await SockftpUploads.checksum(file, () => {});
                        return (performance.now() - start) / 1000;
                    }"""
                )

            def page_upload() -> float:
                done = page.locator("#upload-list .upload.done").count()
                start = time.perf_counter()
                page.set_input_files("#pick-files", source)
                page.locator("#upload-list .upload.done").nth(done).wait_for()
                elapsed = time.perf_counter() - start
                size = os.path.getsize(os.path.join(server.home(), "source.bin"))
                assert size == args.size, size
                os.unlink(os.path.join(server.home(), "source.bin"))
                return elapsed

            # A hidden input of our own for the hash-only variant.
            page.evaluate(
                """() => {
                    const input = document.createElement("input");
                    input.type = "file"; input.id = "bench-file"; input.hidden = true;
                    document.body.append(input);
                }"""
            )
            variants = {"curl -T (PUT)": curl_put, "page: hash only": page_hash, "page: upload": page_upload}
            seconds = interleave(variants, args.runs)
            browser.close()
    print(f"one {human_size(args.size)} file, {args.runs} runs, medians:")
    for name, times in seconds.items():
        median = statistics.median(times)
        print(f"  {name:<18} {median:7.3f} s  {args.size / median / 1e9:6.2f} GB/s")
    shares = [c / p for c, p in zip(seconds["curl -T (PUT)"], seconds["page: upload"], strict=True)]
    each = ", ".join(f"{share:.2f}" for share in shares)
    print(f"  page upload / curl PUT, by speed: {statistics.median(shares):.2f}x (runs: {each})")


def _log_in(page, base: str) -> None:
    page.goto(base + "/")
    page.fill("#login-form input[name=user]", USER)
    page.fill("#login-form input[name=password]", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#app", state="visible")


if __name__ == "__main__":
    main()
