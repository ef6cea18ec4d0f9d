// Uploads from the browser: each file is hashed (XXH3-128, hash-wasm) and
// then sent with tus (tus-js-client), resumable across a dropped network
// and a page reload. The server checks the hash sent in the tus metadata
// before the file takes its name, so a file is verified end to end.
// Every name is shown with textContent, never as HTML.
"use strict";

const SockftpUploads = (() => {
  // Bytes hashed between two progress updates.
  const HASH_CHUNK = 4 * 1024 * 1024;
  // tus PATCH size: a dropped connection costs at most this much again.
  const CHUNK_SIZE = 16 * 1024 * 1024;
  // Uploads at once; the others wait their turn.
  const PARALLEL = 2;
  // Retries of a failed request before the upload stops and waits for the
  // network to come back (the "online" event) or a click on Retry.
  const RETRY_DELAYS = [0, 1000, 3000, 5000, 10000, 20000];

  // The file's XXH3-128 as sockftp writes it (protocol/checksum.py). Read
  // as a stream: in chromium here 256 MiB hashed in 0.5-0.6 s this way,
  // against 0.6-2.0 s by 4 MiB slices (the WebAssembly itself: 0.04-0.1 s).
  async function checksum(file, onProgress) {
    const hasher = await hashwasm.createXXHash128();
    hasher.init();
    const reader = file.stream().getReader();
    let done = 0;
    let shown = 0;
    for (;;) {
      const chunk = await reader.read();
      if (chunk.done) break;
      hasher.update(chunk.value);
      done += chunk.value.length;
      if (done - shown >= HASH_CHUNK) {
        shown = done; // progress every 4 MiB, not every 64 KiB chunk
        onProgress(done);
      }
    }
    onProgress(done);
    return "xxh3-128:" + hasher.digest("hex");
  }

  function formatBytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i++;
    }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // A queue of uploads shown in *list* (a <ul>), with a total bar.
  // options: endpoint, headers() -> extra request headers, user (for the
  // resume fingerprint), onDone(item), onListChange().
  class Queue {
    constructor(options, ui) {
      this.options = options;
      this.ui = ui; // {section, list, totalFill, totalText}
      this.items = [];
      this.running = 0;
      window.addEventListener("online", () => this.items.filter((i) => i.state === "failed").forEach((i) => this.retry(i)));
    }

    // Queue *file* to be stored at *path* (a "/"-separated path in the home).
    add(file, path) {
      const item = { file, path, sent: 0, state: "waiting", upload: null };
      const row = el("li", "upload");
      item.name = el("span", "name", path);
      item.bar = el("div", "bar");
      item.fill = el("div", "fill");
      item.bar.append(item.fill);
      item.status = el("span", "status", "waiting");
      item.retryButton = el("button", "retry", "Retry");
      item.retryButton.type = "button";
      item.retryButton.hidden = true;
      item.retryButton.addEventListener("click", () => this.retry(item));
      row.append(item.name, item.bar, item.status, item.retryButton);
      item.row = row;
      this.ui.list.append(row);
      this.ui.section.hidden = false;
      this.items.push(item);
      this.pump();
      this.total();
    }

    pump() {
      while (this.running < PARALLEL) {
        const next = this.items.find((i) => i.state === "waiting");
        if (!next) return;
        this.running++;
        next.state = "hashing";
        this.start(next).catch((error) => this.fail(next, error));
      }
    }

    async start(item) {
      const file = item.file;
      item.status.textContent = "hashing";
      item.checksum = item.checksum || (await checksum(file, (n) => this.show(item, n, "hashing")));
      item.state = "uploading";
      const options = this.options;
      const upload = new tus.Upload(file, {
        endpoint: options.endpoint,
        chunkSize: CHUNK_SIZE,
        retryDelays: RETRY_DELAYS,
        metadata: {
          path: item.path,
          filename: file.name,
          filetype: file.type || "application/octet-stream",
          checksum: item.checksum,
        },
        // The same file to the same place by the same user resumes, even
        // after a reload; tus-js-client keeps the upload's URL in localStorage.
        fingerprint: async () => ["sockftp", options.user, item.path, file.size, file.lastModified].join("\n"),
        removeFingerprintOnSuccess: true,
        onBeforeRequest: (req) => {
          const headers = options.headers();
          for (const name of Object.keys(headers)) req.setHeader(name, headers[name]);
        },
        onProgress: (sent) => {
          item.sent = sent;
          this.show(item, sent, "uploading");
        },
        onSuccess: () => {
          item.state = "done";
          item.sent = file.size;
          this.show(item, file.size, "done, verified");
          item.row.classList.add("done");
          this.finished(item);
          if (options.onDone) options.onDone(item);
        },
        onError: (error) => this.fail(item, error),
      });
      item.upload = upload;
      const previous = await upload.findPreviousUploads();
      if (previous.length) {
        upload.resumeFromPreviousUpload(previous[0]);
        item.status.textContent = "resuming";
      }
      upload.start();
    }

    show(item, n, what) {
      const size = item.file.size;
      item.fill.style.width = (size ? (100 * n) / size : 100).toFixed(1) + "%";
      item.status.textContent = what + " " + formatBytes(n) + " of " + formatBytes(size);
      this.total();
    }

    fail(item, error) {
      item.state = "failed";
      const response = error && error.originalResponse;
      let why = error && error.message ? error.message : String(error);
      if (response) {
        try {
          why = JSON.parse(response.getBody()).message || why;
        } catch (_) {
          /* not JSON: keep tus-js-client's message */
        }
      }
      item.status.textContent = "failed: " + why;
      item.row.classList.add("failed");
      item.retryButton.hidden = false;
      this.finished(item);
    }

    retry(item) {
      item.row.classList.remove("failed");
      item.retryButton.hidden = true;
      if (item.upload) {
        item.state = "uploading";
        this.running++;
        item.status.textContent = "retrying";
        item.upload.start();
      } else {
        item.state = "waiting";
        this.pump();
      }
    }

    finished(item) {
      this.running = Math.max(0, this.running - 1);
      this.pump();
      this.total();
      if (this.options.onListChange) this.options.onListChange(item);
    }

    total() {
      let size = 0;
      let sent = 0;
      for (const item of this.items) {
        size += item.file.size;
        sent += item.state === "done" ? item.file.size : item.sent;
      }
      const done = this.items.filter((i) => i.state === "done").length;
      this.ui.totalFill.style.width = (size ? (100 * sent) / size : 100).toFixed(1) + "%";
      this.ui.totalText.textContent =
        done + " of " + this.items.length + " files, " + formatBytes(sent) + " of " + formatBytes(size);
    }
  }

  // Files of a drop, folders walked (webkitGetAsEntry), as [file, relative path].
  async function droppedFiles(dataTransfer) {
    const out = [];
    const entries = [];
    for (const item of dataTransfer.items) {
      const entry = item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
      if (entry) entries.push(entry);
      else if (item.kind === "file") out.push([item.getAsFile(), item.getAsFile().name]);
    }
    async function walk(entry, prefix) {
      if (entry.isFile) {
        const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
        out.push([file, prefix + entry.name]);
      } else if (entry.isDirectory) {
        const reader = entry.createReader();
        for (;;) {
          const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
          if (!batch.length) break;
          for (const child of batch) await walk(child, prefix + entry.name + "/");
        }
      }
    }
    for (const entry of entries) await walk(entry, "");
    if (!entries.length && !out.length) {
      for (const file of dataTransfer.files) out.push([file, file.name]);
    }
    return out;
  }

  // Create the folders that *files* ([file, "/a/b/name"]...) go into, before
  // their uploads start (tus makes files, not folders). *mkdirUrl(path)* is
  // the URL of a POST that makes a folder and its parents.
  async function makeFolders(files, mkdirUrl, headers) {
    const folders = new Set();
    for (const [, path] of files) {
      const cut = path.lastIndexOf("/");
      if (cut > 0) folders.add(path.slice(0, cut));
    }
    for (const folder of folders) {
      const response = await fetch(mkdirUrl(folder), { method: "POST", headers, credentials: "same-origin" });
      if (!response.ok && response.status !== 409) throw new Error("cannot create folder " + folder);
    }
  }

  // Make *element* take drops of files and folders: onFiles([[file, path]...]).
  function dropZone(element, onFiles) {
    element.addEventListener("dragover", (event) => {
      event.preventDefault();
      element.classList.add("over");
    });
    element.addEventListener("dragleave", () => element.classList.remove("over"));
    element.addEventListener("drop", async (event) => {
      event.preventDefault();
      element.classList.remove("over");
      onFiles(await droppedFiles(event.dataTransfer));
    });
  }

  // Uploads this browser started and never finished (kept by tus-js-client).
  async function unfinished(user) {
    const all = await tus.defaultOptions.urlStorage.findAllUploads();
    return all.filter((u) => (u.urlStorageKey || "").split("\n")[1] === user);
  }

  return { Queue, checksum, dropZone, makeFolders, droppedFiles, formatBytes, el, unfinished };
})();
