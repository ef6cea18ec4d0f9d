// The browser UI: log in, browse, upload, download, mkdir, rename, delete,
// the quota, share links. It speaks the same APIs as scripts (/files/,
// /api/quota, /tus/, /shares/), logged in by the session cookie, and sends
// the CSRF token with every change. Names are always set with textContent:
// a file called <img src=x onerror=...> is shown, never parsed.
"use strict";

(() => {
  const U = SockftpUploads;
  const el = U.el;
  const $ = (id) => document.getElementById(id);
  const state = { user: null, csrf: null, cwd: [], entries: [], sort: { key: "name", up: true }, listing: 0 };
  let queue = null;

  // -- requests -----------------------------------------------------------------------

  function filesUrl(parts, trailingSlash) {
    return "/files/" + parts.map(encodeURIComponent).join("/") + (trailingSlash && parts.length ? "/" : "");
  }

  async function api(method, url, body) {
    // X-Sockftp-UI: a login that has ended is answered 403 login_required,
    // not 401 with a Basic challenge (chromium would hold the fetch for a
    // password box).
    const headers = { Accept: "application/json", "X-Sockftp-UI": "1" };
    if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = state.csrf;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    if (!response.ok) {
      const why = await errorInfo(response);
      if (response.status === 401 || why.error === "login_required") {
        showLogin();
        throw new Error("logged out: log in again");
      }
      throw new Error(why.message);
    }
    return response;
  }

  async function errorInfo(response) {
    try {
      const data = await response.json();
      return { error: data.error, message: data.message || data.error || response.statusText };
    } catch (_) {
      return { error: null, message: response.status + " " + response.statusText };
    }
  }

  async function errorText(response) {
    return (await errorInfo(response)).message;
  }

  function report(error) {
    $("error").textContent = error ? String(error.message || error) : "";
  }

  // -- logging in ---------------------------------------------------------------------

  function showLogin() {
    state.user = null;
    $("app").hidden = true;
    $("who").hidden = true;
    $("login").hidden = false;
  }

  async function start() {
    const response = await fetch("/ui/session", { credentials: "same-origin" });
    if (response.ok) loggedIn(await response.json());
    else showLogin();
  }

  function loggedIn(who) {
    state.user = who.user;
    state.csrf = who.csrf;
    $("login").hidden = true;
    $("app").hidden = false;
    $("who").hidden = false;
    $("user").textContent = who.user;
    queue = new U.Queue(
      {
        endpoint: "/tus/",
        user: who.user,
        headers: () => ({ "X-CSRF-Token": state.csrf, "X-Sockftp-UI": "1" }),
        onListChange: () => {
          refresh();
          quota();
        },
      },
      { section: $("uploads"), list: $("upload-list"), totalFill: $("total-fill"), totalText: $("total-text") },
    );
    showUnfinished();
    navigate();
  }

  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    $("login-error").textContent = "";
    const response = await fetch("/ui/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user: form.user.value, password: form.password.value }),
      credentials: "same-origin",
    });
    form.password.value = "";
    if (response.ok) loggedIn(await response.json());
    else $("login-error").textContent = await errorText(response);
  });

  $("logout").addEventListener("click", async () => {
    await fetch("/ui/logout", { method: "POST", headers: { "X-CSRF-Token": state.csrf }, credentials: "same-origin" });
    showLogin();
  });

  // -- browsing -----------------------------------------------------------------------

  // The folder shown is in the URL's fragment (#/a/b), so a reload stays in it.
  function cwdFromHash() {
    const raw = location.hash.replace(/^#\/?/, "");
    return raw ? raw.split("/").filter(Boolean).map(decodeURIComponent) : [];
  }

  function go(parts) {
    location.hash = "#/" + parts.map(encodeURIComponent).join("/");
  }

  window.addEventListener("hashchange", () => state.user && navigate());

  function navigate() {
    try {
      state.cwd = cwdFromHash();
    } catch (_) {
      state.cwd = [];
    }
    crumbs();
    refresh();
    quota();
    report(null);
  }

  function crumbs() {
    const nav = $("crumbs");
    nav.replaceChildren();
    const home = el("button", "crumb", "home");
    home.type = "button";
    home.addEventListener("click", () => go([]));
    nav.append(home);
    state.cwd.forEach((name, i) => {
      nav.append(el("span", "sep", "/"));
      const crumb = el("button", "crumb", name);
      crumb.type = "button";
      crumb.addEventListener("click", () => go(state.cwd.slice(0, i + 1)));
      nav.append(crumb);
    });
  }

  // The listing streams: entries are shown as their bytes arrive, so a
  // big folder starts showing at once.
  async function refresh() {
    const ticket = ++state.listing;
    let response;
    try {
      response = await api("GET", filesUrl(state.cwd, true));
    } catch (error) {
      report(error);
      return;
    }
    const reader = response.body.getReader();
    const scanner = objectScanner();
    const decoder = new TextDecoder();
    // The old rows stay until the new listing's first entries arrive: no flicker.
    const entries = [];
    for (;;) {
      const { done, value } = await reader.read();
      if (ticket !== state.listing) return reader.cancel();
      if (done) break;
      const found = scanner(decoder.decode(value, { stream: true }));
      if (found.length) {
        entries.push(...found);
        state.entries = entries;
        renderSoon();
      }
    }
    state.entries = entries;
    renderSoon();
  }

  // Complete entry objects {...} out of a streamed {"path":..,"entries":[..]}.
  function objectScanner() {
    let buffer = "";
    let depth = 0;
    let inString = false;
    let escaped = false;
    let start = -1;
    let position = 0;
    return (text) => {
      buffer += text;
      const out = [];
      for (; position < buffer.length; position++) {
        const c = buffer[position];
        if (inString) {
          if (escaped) escaped = false;
          else if (c === "\\") escaped = true;
          else if (c === '"') inString = false;
        } else if (c === '"') inString = true;
        else if (c === "{") {
          depth++;
          if (depth === 2) start = position;
        } else if (c === "}") {
          if (depth === 2) out.push(JSON.parse(buffer.slice(start, position + 1)));
          depth--;
        }
      }
      if (depth <= 1 && !inString) {
        buffer = buffer.slice(position);
        position = 0;
      }
      return out;
    };
  }

  function sorted() {
    const { key, up } = state.sort;
    const sign = up ? 1 : -1;
    return state.entries.slice().sort((a, b) => {
      if ((a.type === "dir") !== (b.type === "dir")) return a.type === "dir" ? -1 : 1;
      const x = a[key];
      const y = b[key];
      const order = key === "name" ? String(x).localeCompare(String(y)) : x - y;
      return sign * order;
    });
  }

  document.querySelectorAll("th button[data-sort]").forEach((button) =>
    button.addEventListener("click", () => {
      const key = button.dataset.sort;
      state.sort = { key, up: state.sort.key === key ? !state.sort.up : true };
      render();
    }),
  );

  // At most one render a frame, however many chunks a big listing arrives in.
  let renderPending = false;
  function renderSoon() {
    if (renderPending) return;
    renderPending = true;
    requestAnimationFrame(() => {
      renderPending = false;
      render();
    });
  }

  function render() {
    const rows = sorted().map(row);
    $("entries").replaceChildren(...rows);
  }

  function row(entry) {
    const tr = el("tr", entry.type);
    const path = state.cwd.concat([entry.name]);
    const nameCell = el("td", "name");
    if (entry.type === "dir") {
      const open = el("button", "open", entry.name);
      open.type = "button";
      open.addEventListener("click", () => go(path));
      nameCell.append(open);
    } else {
      const link = el("a", "download", entry.name);
      link.href = filesUrl(path, false);
      nameCell.append(link);
    }
    const actions = el("td", "actions");
    for (const [label, handler] of [
      ["Rename", () => askName("New name", entry.name, (name) => rename(entry, name))],
      ["Delete", () => remove(entry)],
      ["Share", () => askShare(entry)],
    ]) {
      const button = el("button", label.toLowerCase(), label);
      button.type = "button";
      button.addEventListener("click", handler);
      actions.append(button);
    }
    tr.append(
      nameCell,
      el("td", "size", entry.type === "dir" ? "" : U.formatBytes(entry.size)),
      el("td", "mtime", new Date(entry.mtime * 1000).toLocaleString()),
      actions,
    );
    return tr;
  }

  async function quota() {
    try {
      const q = await (await api("GET", "/api/quota")).json();
      const used = q.used_bytes + (q.reserved_bytes || 0);
      const limit = q.quota_bytes;
      const share = limit ? Math.min(100, (100 * used) / limit) : 0;
      $("quota-fill").style.width = share.toFixed(1) + "%";
      $("quota-fill").className = share > 90 ? "full" : "";
      $("quota-text").textContent =
        U.formatBytes(q.used_bytes) + " in " + q.used_files + " files" + (limit ? " of " + U.formatBytes(limit) : "");
    } catch (error) {
      report(error);
    }
  }

  // -- changes ------------------------------------------------------------------------

  // One small form asks for a name (no window.prompt: no dialogs at all).
  function askName(label, value, done) {
    const form = $("name-form");
    $("name-label").textContent = label;
    form.newname.value = value;
    form.hidden = false;
    form.newname.focus();
    form.onsubmit = async (event) => {
      event.preventDefault();
      form.hidden = true;
      await done(form.newname.value);
    };
  }

  async function run(action) {
    report(null);
    try {
      await action();
    } catch (error) {
      report(error);
    }
    refresh();
    quota();
  }

  $("mkdir").addEventListener("click", () =>
    askName("Folder name", "", (name) =>
      run(() => api("POST", filesUrl(state.cwd.concat([name]), false) + "?op=mkdir")),
    ),
  );

  function rename(entry, name) {
    if (!name || name === entry.name) return;
    const to = "/" + state.cwd.concat([name]).join("/");
    return run(() =>
      api("POST", filesUrl(state.cwd.concat([entry.name]), false) + "?op=move&to=" + encodeURIComponent(to)),
    );
  }

  function remove(entry) {
    return run(() => api("DELETE", filesUrl(state.cwd.concat([entry.name]), false)));
  }

  document.querySelectorAll("form.inline .cancel").forEach((button) =>
    button.addEventListener("click", () => {
      button.form.hidden = true;
    }),
  );

  // -- uploads ------------------------------------------------------------------------

  async function upload(files) {
    const base = state.cwd.length ? "/" + state.cwd.join("/") + "/" : "/";
    const placed = files.map(([file, relative]) => [file, base + relative]);
    const mkdirUrl = (path) => filesUrl(path.split("/").filter(Boolean), false) + "?op=mkdir&parents=1";
    try {
      await U.makeFolders(placed, mkdirUrl, { "X-CSRF-Token": state.csrf, "X-Sockftp-UI": "1" });
    } catch (error) {
      return report(error);
    }
    for (const [file, path] of placed) queue.add(file, path);
  }

  $("pick-files").addEventListener("change", (event) => {
    upload([...event.target.files].map((f) => [f, f.name]));
    event.target.value = "";
  });
  $("pick-folder").addEventListener("change", (event) => {
    upload([...event.target.files].map((f) => [f, f.webkitRelativePath || f.name]));
    event.target.value = "";
  });

  U.dropZone($("drop"), upload);

  async function showUnfinished() {
    const left = await U.unfinished(state.user);
    const note = $("resumable");
    if (!left.length) return;
    const names = left.map((u) => (u.metadata && u.metadata.path) || "?").join(", ");
    note.textContent = "Unfinished uploads (pick or drop the same files again to resume): " + names;
    note.hidden = false;
    $("uploads").hidden = false;
  }

  // -- share links --------------------------------------------------------------------

  function askShare(entry) {
    const form = $("share-form");
    const path = "/" + state.cwd.concat([entry.name]).join("/");
    $("share-target").textContent = path;
    form.kind.querySelector('option[value="drop"]').disabled = entry.type !== "dir";
    form.kind.value = "read";
    form.hidden = false;
    form.onsubmit = (event) => {
      event.preventDefault();
      form.hidden = true;
      const body = { path, kind: form.kind.value, expires_in: Number(form.days.value) * 86400 };
      if (form.password.value) body.password = form.password.value;
      form.password.value = "";
      run(async () => {
        const made = await (await api("POST", "/shares/", body)).json();
        const link = $("share-url");
        link.href = made.url;
        link.textContent = new URL(made.url, location.href).href;
        $("share-made").hidden = false;
        if (!$("shares").hidden) listShares();
      });
    };
  }

  async function listShares() {
    const data = await (await api("GET", "/shares/")).json();
    const rows = data.shares.map((share) => {
      const tr = el("tr");
      const revoke = el("button", "revoke", "Revoke");
      revoke.type = "button";
      revoke.addEventListener("click", () =>
        run(async () => {
          await api("DELETE", "/shares/" + encodeURIComponent(share.id));
          await listShares();
        }),
      );
      const actions = el("td");
      actions.append(revoke);
      tr.append(
        el("td", "path", share.path),
        el("td", "kind", share.kind === "drop" ? "upload-only" : "read-only"),
        el("td", "expires", share.expires ? new Date(share.expires * 1000).toLocaleString() : "never"),
        el("td", "password", share.password ? "yes" : "no"),
        actions,
      );
      return tr;
    });
    $("share-list").replaceChildren(...rows);
  }

  $("show-shares").addEventListener("click", () => {
    const section = $("shares");
    section.hidden = !section.hidden;
    if (!section.hidden) run(listShares);
  });

  start().catch(report);
})();
