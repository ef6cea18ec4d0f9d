// The page of a share link (/s/SECRET/): a read link's file or folder, or
// a drop link's upload box. Every request is relative to the link's URL,
// so the link's secret is all it needs; names are set with textContent.
"use strict";

(() => {
  const U = SockftpUploads;
  const el = U.el;
  const $ = (id) => document.getElementById(id);
  const base = location.pathname.replace(/[^/]*$/, ""); // /s/SECRET/
  let info = null;

  function report(error) {
    $("share-error").textContent = error ? String(error.message || error) : "";
  }

  async function errorText(response) {
    try {
      return (await response.json()).message || response.statusText;
    } catch (_) {
      return response.status + " " + response.statusText;
    }
  }

  async function start() {
    const response = await fetch(base + "info", { credentials: "same-origin" });
    if (!response.ok) throw new Error(await errorText(response));
    info = await response.json();
    document.querySelectorAll(".expires").forEach((node) => {
      node.textContent = info.expires ? new Date(info.expires * 1000).toLocaleString() : "never";
    });
    if (!info.unlocked) {
      $("unlock-form").hidden = false; // the name and the rest come once it is open
      return;
    }
    $("share-title").textContent = (info.kind === "drop" ? "Upload to " : "Shared: ") + info.name;
    open();
  }

  $("unlock-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    report(null);
    const form = event.target;
    const response = await fetch(base + "unlock", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ password: form.password.value }),
      credentials: "same-origin",
    });
    form.password.value = "";
    if (!response.ok) return report(await errorText(response));
    form.hidden = true;
    start().catch(report);
  });

  function open() {
    if (info.kind === "drop") return dropBox();
    if (info.type === "dir") {
      $("read-folder").hidden = false;
      window.addEventListener("hashchange", listFolder);
      return listFolder();
    }
    $("read-file").hidden = false;
    $("file-name").textContent = info.name;
    $("file-size").textContent = U.formatBytes(info.size);
    $("file-link").href = base + "files/";
  }

  function folderParts() {
    const raw = location.hash.replace(/^#\/?/, "");
    return raw ? raw.split("/").filter(Boolean).map(decodeURIComponent) : [];
  }

  function url(parts, dir) {
    return base + "files/" + parts.map(encodeURIComponent).join("/") + (dir && parts.length ? "/" : "");
  }

  async function listFolder() {
    report(null);
    const parts = folderParts();
    const nav = $("crumbs");
    nav.replaceChildren();
    [info.name, ...parts].forEach((name, i) => {
      if (i) nav.append(el("span", "sep", "/"));
      const link = el("a", "crumb", name);
      link.href = "#/" + parts.slice(0, i).map(encodeURIComponent).join("/");
      nav.append(link);
    });
    const response = await fetch(url(parts, true), { headers: { Accept: "application/json" } });
    if (!response.ok) return report(await errorText(response));
    const listing = await response.json();
    listing.entries.sort((a, b) => (a.type === "dir") !== (b.type === "dir") ? (a.type === "dir" ? -1 : 1) : a.name.localeCompare(b.name));
    $("entries").replaceChildren(
      ...listing.entries.map((entry) => {
        const tr = el("tr", entry.type);
        const cell = el("td", "name");
        const link = el("a", entry.type === "dir" ? "open" : "download", entry.name);
        const path = parts.concat([entry.name]);
        link.href = entry.type === "dir" ? "#/" + path.map(encodeURIComponent).join("/") : url(path, false);
        cell.append(link);
        tr.append(
          cell,
          el("td", "size", entry.type === "dir" ? "" : U.formatBytes(entry.size)),
          el("td", "mtime", new Date(entry.mtime * 1000).toLocaleString()),
        );
        return tr;
      }),
    );
  }

  function dropBox() {
    $("drop-box").hidden = false;
    $("drop-name").textContent = info.name;
    const queue = new U.Queue(
      { endpoint: new URL(base + "tus/", location.href).href, user: "share:" + base, headers: () => ({}) },
      { section: $("uploads"), list: $("upload-list"), totalFill: $("total-fill"), totalText: $("total-text") },
    );
    const add = async (files) => {
      const placed = files.map(([file, path]) => [file, "/" + path]);
      const mkdirUrl = (path) =>
        base + "files/" + path.split("/").filter(Boolean).map(encodeURIComponent).join("/") + "?op=mkdir&parents=1";
      try {
        await U.makeFolders(placed, mkdirUrl, {});
      } catch (error) {
        return report(error);
      }
      placed.forEach(([file, path]) => queue.add(file, path));
    };
    $("pick-files").addEventListener("change", (event) => {
      add([...event.target.files].map((f) => [f, f.name]));
      event.target.value = "";
    });
    U.dropZone($("drop"), add);
  }

  start().catch(report);
})();
