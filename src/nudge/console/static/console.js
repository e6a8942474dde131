"use strict";
// Nudge console: a phone-like live inbox (with its read/archived state and the user's notification
// settings), a conversation simulator that feeds the real pipeline, and the developer's trace view. Every piece of user data reaches the DOM as text (el() and
// textContent), never as HTML.

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const state = {
  token: null,
  role: null, // admin | user | app
  uid: null,
  appId: null,
  apps: new Map(), // app_id -> app (admin)
  users: [],
  sessionId: null,
  sessionStarted: 0,
  speaker: 0,
  stream: null, // AbortController of the live inbox
  notes: new Map(), // notification id -> the notification, as shown in the feed
  prefs: null, // the user's preferences document, as last loaded or saved
  openTraces: new Set(),
  traceKey: "",
  traceTimer: null,
  notesTimer: null,
  unreadVersion: 0, // how many changes told the unread count so far
  playing: false,
};

// --- DOM helpers -------------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function toast(message, kind = "error") {
  const box = $("toast");
  box.textContent = message;
  box.className = `toast ${kind}`;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 5000);
}

function hue(text) {
  let h = 0;
  for (const c of text) h = (h * 31 + c.codePointAt(0)) % 360;
  return h;
}

function clockText(date) {
  return date.toLocaleTimeString([], { hour: "numeric", minute: "2-digit" });
}

function ago(seconds) {
  const d = Date.now() / 1000 - seconds;
  if (d < 45) return "now";
  if (d < 3600) return `${Math.round(d / 60)}m ago`;
  if (d < 86400) return `${Math.round(d / 3600)}h ago`;
  return new Date(seconds * 1000).toLocaleDateString();
}

function ms(seconds) {
  if (seconds === null || seconds === undefined) return "";
  return seconds < 1 ? `${Math.round(seconds * 1000)} ms` : `${seconds.toFixed(1)} s`;
}

// --- API ---------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}` };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError("the platform is unreachable; is `nudge serve` running?", 0);
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (err) { data = null; }
  if (!response.ok) {
    const detail = data && typeof data.detail === "string" ? data.detail : response.statusText;
    throw new ApiError(`${response.status}: ${detail}`, response.status);
  }
  return data;
}

// --- Sign-in -----------------------------------------------------------------------------

function showLogin(message) {
  $("workspace").hidden = true;
  $("controls").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token-input").focus();
}

async function signIn(token, uid, explicit) {
  state.token = token;
  let who;
  try {
    who = await api("GET", "/console/api/whoami");
  } catch (err) {
    sessionStorage.removeItem("nudge.token");
    showLogin(err.status === 401 ? "That token is not valid here." : err.message);
    return;
  }
  sessionStorage.setItem("nudge.token", token);
  state.role = who.role;
  $("login").hidden = true;
  $("workspace").hidden = false;
  $("controls").hidden = false;
  $("role-chip").textContent = who.role === "admin" ? "admin" : who.role === "user" ? `user ${who.uid}` : `app ${who.app_id}`;
  await loadApps(who);
  await loadUsers(who, uid, explicit);
}

async function loadApps(who) {
  state.apps.clear();
  if (who.role === "admin") {
    for (const app of await api("GET", "/v1/apps")) state.apps.set(app.app_id, app);
  } else if (who.role === "app") {
    state.apps.set(who.app_id, { app_id: who.app_id, name: who.app_id, status: "" });
  }
  const select = $("app-select");
  select.replaceChildren();
  for (const app of state.apps.values()) {
    select.append(el("option", { value: app.app_id, text: `${app.name} · ${app.app_id}` }));
  }
  const wanted = new URLSearchParams(location.search).get("app");
  if (wanted && state.apps.has(wanted)) select.value = wanted;
  select.disabled = state.apps.size === 0;
}

async function loadUsers(who, uid, explicit) {
  const select = $("user-select");
  select.replaceChildren();
  if (who.role === "admin") {
    state.users = (await api("GET", "/console/api/users")).users;
  } else if (who.role === "user") {
    state.users = [{ uid: who.uid, name: who.name }];
    uid = who.uid;
  } else {
    state.users = [];
  }
  if (uid && !state.users.some((u) => u.uid === uid)) {
    if (explicit) state.users.unshift({ uid, name: uid }); else uid = null;
  }
  for (const user of state.users) {
    select.append(el("option", { value: user.uid, text: `${user.name} · ${user.uid}` }));
  }
  select.disabled = who.role !== "admin";
  const chosen = uid || (state.users[0] && state.users[0].uid) || null;
  if (chosen) {
    select.value = chosen;
    await selectUser(chosen);
  } else {
    await selectUser(null);
  }
}

// --- The user ----------------------------------------------------------------------------

async function selectUser(uid) {
  state.uid = uid;
  const url = new URL(location.href);
  if (uid) url.searchParams.set("uid", uid); else url.searchParams.delete("uid");
  history.replaceState(null, "", url);
  if (uid) localStorage.setItem("nudge.uid", uid);
  closeStream();
  newSession();
  const usable = Boolean(uid) && state.role !== "app";
  $("composer").classList.toggle("disabled", !usable);
  for (const id of ["say", "send", "play", "finish", "new-session"]) $(id).disabled = !usable;
  $("installed").textContent = "";
  $("lock-user").textContent = "";
  $("inbox-bar").hidden = !usable;
  $("unread-count").hidden = !usable;
  $("prefs").hidden = !usable;
  if (!usable) {
    $("feed").replaceChildren();
    $("feed-empty").textContent = state.role === "app"
      ? "Signed in with an app secret: the inbox and the simulator need the admin token or a user token."
      : "No user yet: create one with POST /v1/users or `nudge users create`.";
    $("feed-empty").hidden = false;
    pickApp();
    return;
  }
  try {
    const user = await api("GET", `/v1/users/${enc(uid)}`);
    $("lock-user").textContent = user.name;
    const names = user.apps.map((a) => (state.apps.get(a.app_id) || { name: a.app_id }).name);
    $("installed").textContent = names.length ? `Installed: ${names.join(", ")}` : "No apps installed";
    pickApp(user.apps.map((a) => a.app_id));
  } catch (err) {
    toast(err.message);
  }
  loadKnowledge();
  await syncFeed();
  loadPrefs();
  openStream(uid);
}

function pickApp(installed = []) {
  const select = $("app-select");
  const current = select.value;
  if (!state.apps.has(current) || (installed.length && !installed.includes(current))) {
    const first = installed.find((id) => state.apps.has(id));
    if (first) select.value = first;
  }
  state.appId = select.value || null;
  state.traceKey = "";
  state.openTraces.clear();
  refreshTraces();
}

// What the platform knows of the user: facts and conversations (imported ones name their app).
function knownFrom(appId) {
  if (!appId) return null;
  const app = state.apps.get(appId);
  return el("span", { class: "from", text: `from ${app ? app.name : appId}` });
}

async function loadKnowledge() {
  const facts = $("known-facts");
  const conversations = $("known-conversations");
  facts.replaceChildren();
  conversations.replaceChildren();
  $("knowledge-count").textContent = "";
  if (!state.uid || state.role === "app") return;
  try {
    const known = await api("GET", `/console/api/users/${enc(state.uid)}/knowledge`);
    for (const f of known.facts) {
      facts.append(el("li", {}, el("span", { text: f.text }), knownFrom(f.app_id)));
    }
    for (const c of known.conversations) {
      const when = el("time", { class: "from", text: ago(c.started_at) });
      conversations.append(el("li", { dataset: { id: c.id, source: c.source } },
        el("span", { text: c.title || "(live)" }), when, knownFrom(c.app_id)));
    }
    $("knowledge-count").textContent = `${known.facts.length} facts · ${known.conversations.length} conversations`;
  } catch (err) {
    toast(err.message);
  }
}

// --- The phone: inbox + live stream --------------------------------------------------------

function appName(note) {
  const app = state.apps.get(note.app_id);
  if (app) return app.name;
  return (note.title || note.app_id || "App").replace(/ says$/, "");
}

function notificationCard(note, fresh) {
  const name = appName(note);
  const icon = el("div", { class: "notif-icon", "aria-hidden": "true", text: name.slice(0, 1).toUpperCase() });
  icon.style.setProperty("--h", String(hue(note.app_id || name)));
  const when = el("time", { text: ago(note.created_at), datetime: new Date(note.created_at * 1000).toISOString() });
  const act = (cls, text, change) => el("button", {
    type: "button",
    class: `act ${cls}`,
    text,
    onclick: (event) => { event.stopPropagation(); changeState(note.id, change); },
  });
  const card = el("article", {
    class: `notif${fresh ? " fresh" : ""}${note.read ? " read" : ""}${note.archived ? " archived" : ""}`,
    dataset: { id: note.id, kind: note.kind || "", hold: note.hold || "" },
    tabindex: "0",
    title: note.read ? "" : "Mark as read",
  },
  icon,
  el("div", { class: "notif-main" },
    el("div", { class: "notif-head" }, el("span", { class: "notif-app", text: name }), when),
    el("div", { class: "notif-title", text: note.title }),
    el("div", { class: "notif-body", text: note.body }),
    note.hold_reason ? el("div", { class: "notif-hold", text: note.hold_reason }) : null,
    el("div", { class: "notif-actions" },
      act("act-read", note.read ? "Mark unread" : "Mark read", { read: !note.read }),
      act("act-archive", note.archived ? "Unarchive" : "Archive", { archived: !note.archived }))));
  card.addEventListener("click", () => { if (!note.read) changeState(note.id, { read: true }); });
  return card;
}

function cardOf(id) {
  return $("feed").querySelector(`.notif[data-id="${CSS.escape(id)}"]`);
}

// Show a notification's new state: redrawn in place, or taken out when archived and archived ones
// are not shown.
function showNote(note) {
  const card = cardOf(note.id);
  if (!card) return;
  const known = state.notes.get(note.id) || {};
  const merged = { ...known, ...note };
  state.notes.set(note.id, merged);
  if (merged.archived && !$("show-archived").checked) {
    card.remove();
    state.notes.delete(note.id);
    $("feed-empty").hidden = state.notes.size > 0;
    return;
  }
  card.replaceWith(notificationCard(merged, card.classList.contains("fresh")));
}

async function changeState(id, change) {
  try {
    showNote(await api("PATCH", `/v1/users/${enc(state.uid)}/notifications/${enc(id)}`, change));
    await loadUnread();
  } catch (err) {
    toast(err.message);
  }
}

async function readAll() {
  const ids = [...state.notes.keys()].sort();
  const body = ids.length ? { up_to: ids[ids.length - 1] } : {};
  try {
    const done = await api("POST", `/v1/users/${enc(state.uid)}/notifications/read-all`, body);
    applyReadAll(body.up_to || null, done.unread);
  } catch (err) {
    toast(err.message);
  }
}

function applyReadAll(upTo, unread) {
  for (const note of [...state.notes.values()]) {
    if (!note.read && (!upTo || note.id <= upTo)) showNote({ id: note.id, read: true });
  }
  setUnread(unread, true);
}

// The count a change answered with (``changed``) wins over a count asked for before it came.
function setUnread(n, changed = false) {
  if (changed) state.unreadVersion += 1;
  const badge = $("unread-count");
  badge.dataset.count = String(n);
  badge.textContent = `${n} unread`;
}

async function loadUnread() {
  const uid = state.uid;
  const version = state.unreadVersion;
  try {
    const count = await api("GET", `/v1/users/${enc(uid)}/notifications/unread-count`);
    if (uid === state.uid && version === state.unreadVersion) setUnread(count.unread);
  } catch (err) {
    toast(err.message);
  }
}

// A state event from the stream: a change made here, in another tab or through the API.
function applyStateEvent(event) {
  if (event.read_all) {
    applyReadAll(event.up_to, event.unread);
    return;
  }
  setUnread(event.unread, true);
  if (cardOf(event.id)) showNote(event);
  else if (!event.archived) syncFeed(); // unarchived elsewhere: it belongs in the feed again
}

function addNotification(note, fresh) {
  if (state.notes.has(note.id)) return;
  state.notes.set(note.id, note);
  $("feed").prepend(notificationCard(note, fresh));
  $("feed-empty").hidden = true;
  if (fresh) refreshTraces();
  if (!note.seen) markSeen(note.id);
}

// A notification shown on a visible page has been seen (not read: reading is opening it). The
// ones shown together are marked together, half a second later, and only while the page is
// visible (a hidden tab marks them when it is shown again).
const toMarkSeen = new Map(); // notification id -> its user
let seenTimer = null;

function markSeen(id) {
  toMarkSeen.set(id, state.uid);
  if (!seenTimer) seenTimer = setTimeout(flushSeen, 500);
}

async function flushSeen() {
  seenTimer = null;
  if (document.visibilityState !== "visible") {
    document.addEventListener("visibilitychange", flushSeen, { once: true });
    return;
  }
  const marks = [...toMarkSeen];
  toMarkSeen.clear();
  for (const [id, uid] of marks) {
    try {
      await api("PATCH", `/v1/users/${enc(uid)}/notifications/${enc(id)}`, { seen: true });
    } catch (err) {
      if (err.status !== 404) toast(err.message); // gone meanwhile: nothing to mark
    }
  }
}

async function syncFeed() {
  const uid = state.uid;
  try {
    const archived = $("show-archived").checked ? "&archived=true" : "";
    const page = await api("GET", `/v1/users/${enc(uid)}/notifications?limit=50${archived}`);
    if (uid !== state.uid) return;
    const feed = $("feed");
    const isNew = state.notes.size > 0;
    const fresh = new Set(page.items.filter((n) => isNew && !state.notes.has(n.id)).map((n) => n.id));
    feed.replaceChildren();
    state.notes.clear();
    for (const note of page.items.slice().reverse()) addNotification(note, fresh.has(note.id));
    $("feed-empty").textContent = "No notifications yet. Say something in the conversation, or send one with the API.";
    $("feed-empty").hidden = page.items.length > 0;
  } catch (err) {
    toast(err.message);
  }
  await loadUnread();
}

// A live notification carries what a push carries; the inbox also says whether its push was held
// and why. (Read and archived come as state events: a page read here may be older than those.)
async function refreshNotes() {
  const uid = state.uid;
  try {
    const page = await api("GET", `/v1/users/${enc(uid)}/notifications?limit=20`);
    if (uid !== state.uid) return;
    for (const note of page.items) {
      const shown = state.notes.get(note.id);
      if (shown && shown.hold_reason !== note.hold_reason) {
        showNote({ id: note.id, hold: note.hold, hold_reason: note.hold_reason });
      }
    }
  } catch (err) {
    toast(err.message);
  }
  await loadUnread();
}

// --- The user's notification settings (GET/PUT /v1/users/{uid}/preferences) ----------------

// A user token does not list apps: their name is taken from a notification of theirs, if any.
function appLabel(appId) {
  if (state.apps.has(appId)) return state.apps.get(appId).name;
  const note = [...state.notes.values()].find((n) => n.app_id === appId);
  return note ? appName(note) : appId;
}

function fillTimezones() {
  const list = $("tz-list");
  if (list.childElementCount || typeof Intl.supportedValuesOf !== "function") return;
  for (const zone of Intl.supportedValuesOf("timeZone")) list.append(el("option", { value: zone }));
}

function showPrefs(prefs) {
  state.prefs = prefs;
  $("pref-tz").value = prefs.timezone || "UTC";
  const quiet = prefs.quiet_hours;
  $("pref-quiet").checked = Boolean(quiet);
  $("pref-quiet-start").value = quiet ? quiet.start : "22:00";
  $("pref-quiet-end").value = quiet ? quiet.end : "07:00";
  $("pref-allow-high").checked = Boolean(quiet && quiet.allow_high);
  const rows = Object.entries(prefs.apps || {}).map(([appId, app]) => {
    const name = appLabel(appId);
    const toggle = (cls, label, on) => el("label", { class: "small" },
      el("input", { type: "checkbox", class: cls, checked: on }), ` ${label}`);
    return el("li", { class: `pref-app${app.muted ? " muted" : ""}`, dataset: { app: appId } },
      el("span", { class: "pref-app-name", text: name }),
      el("span", { class: "badge warn pref-state", text: app.muted ? "muted" : "" }),
      el("span", { class: "spacer" }),
      toggle("pref-muted", "mute", app.muted),
      toggle("pref-proactive", "proactive", app.proactive !== false));
  });
  $("pref-apps").replaceChildren(...rows);
  if (!rows.length) $("pref-apps").append(el("li", { class: "muted small", text: "No apps installed." }));
  const muted = Object.values(prefs.apps || {}).filter((a) => a.muted).length;
  const parts = [quiet ? `quiet ${quiet.start}–${quiet.end}` : "", muted ? `${muted} muted` : ""];
  $("prefs-summary").textContent = parts.filter(Boolean).join(" · ");
}

async function loadPrefs() {
  const uid = state.uid;
  $("prefs-status").textContent = "";
  fillTimezones();
  try {
    const prefs = await api("GET", `/v1/users/${enc(uid)}/preferences`);
    if (uid === state.uid) showPrefs(prefs);
  } catch (err) {
    $("prefs-status").textContent = err.message;
  }
}

// The whole document goes back (PUT replaces it): what this form does not show is kept as loaded.
function prefsFromForm() {
  const apps = {};
  for (const row of $("pref-apps").querySelectorAll(".pref-app")) {
    apps[row.dataset.app] = {
      ...((state.prefs && state.prefs.apps[row.dataset.app]) || {}),
      muted: row.querySelector(".pref-muted").checked,
      proactive: row.querySelector(".pref-proactive").checked,
    };
  }
  return {
    ...(state.prefs || {}),
    timezone: $("pref-tz").value.trim(),
    quiet_hours: $("pref-quiet").checked ? {
      start: $("pref-quiet-start").value,
      end: $("pref-quiet-end").value,
      allow_high: $("pref-allow-high").checked,
    } : null,
    apps,
  };
}

async function savePrefs() {
  const uid = state.uid;
  $("prefs-status").textContent = "Saving…";
  try {
    const saved = await api("PUT", `/v1/users/${enc(uid)}/preferences`, prefsFromForm());
    if (uid !== state.uid) return;
    showPrefs(saved);
    $("prefs-status").textContent = "Saved.";
  } catch (err) {
    $("prefs-status").textContent = err.message;
  }
}

function setLive(live) {
  const badge = $("live");
  badge.dataset.live = live ? "true" : "false";
  badge.textContent = live ? "live" : "offline";
}

function closeStream() {
  if (state.stream) state.stream.abort();
  state.stream = null;
  setLive(false);
}

// EventSource cannot send an Authorization header, so the stream is read with fetch.
async function openStream(uid) {
  closeStream();
  const ctrl = new AbortController();
  state.stream = ctrl;
  let delay = 1000;
  let first = true;
  while (!ctrl.signal.aborted) {
    try {
      const response = await fetch(`/v1/users/${enc(uid)}/notifications/stream`, {
        headers: { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" },
        signal: ctrl.signal,
        cache: "no-store",
      });
      if (response.status === 401 || response.status === 403 || response.status === 404) {
        toast(`live inbox refused (${response.status})`);
        return;
      }
      if (!response.ok) throw new Error(String(response.status));
      await readEvents(response.body, ctrl.signal, (event) => {
        if (event.event === "ready") {
          setLive(true);
          delay = 1000;
          if (!first) syncFeed(); // catch up on what arrived while disconnected
          first = false;
        } else if (event.event === "notification") {
          try { addNotification(JSON.parse(event.data), true); } catch (err) { /* not JSON */ }
          clearTimeout(state.notesTimer);
          state.notesTimer = setTimeout(refreshNotes, 250);
        } else if (event.event === "state") {
          try { applyStateEvent(JSON.parse(event.data)); } catch (err) { /* not JSON */ }
        }
      });
    } catch (err) {
      if (ctrl.signal.aborted) return;
    }
    setLive(false);
    await sleep(delay);
    delay = Math.min(delay * 2, 15000);
  }
}

async function readEvents(body, signal, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  signal.addEventListener("abort", () => reader.cancel().catch(() => {}));
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer = (buffer + value).replace(/\r\n|\r/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = { event: "message", data: [] };
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "event") event.event = val;
        else if (field === "data") event.data.push(val);
      }
      onEvent({ event: event.event, data: event.data.join("\n") });
    }
  }
}

function tickClock() {
  const now = new Date();
  $("clock").textContent = clockText(now);
  $("lock-time").textContent = clockText(now);
  $("lock-date").textContent = now.toLocaleDateString([], { weekday: "long", month: "long", day: "numeric" });
  for (const time of document.querySelectorAll(".notif time")) {
    time.textContent = ago(Date.parse(time.getAttribute("datetime")) / 1000);
  }
}

// --- The conversation simulator ------------------------------------------------------------

function newSession() {
  const stamp = Date.now().toString(36);
  const rand = Math.random().toString(36).slice(2, 6);
  state.sessionId = `console-${stamp}-${rand}`;
  state.sessionStarted = Date.now();
  $("session-id").textContent = state.sessionId;
  $("transcript").replaceChildren();
  $("sim-status").textContent = "";
  if ($("only-session").checked) refreshTraces();
}

function setSpeaker(n) {
  state.speaker = n;
  for (const button of document.querySelectorAll(".speaker")) {
    const on = Number(button.dataset.speaker) === n;
    button.classList.toggle("active", on);
    button.setAttribute("aria-checked", on ? "true" : "false");
  }
}

function segmentFor(text, speakerNumber, isUser) {
  const start = (Date.now() - state.sessionStarted) / 1000;
  const words = text.trim().split(/\s+/).length;
  return {
    text,
    speaker: `SPEAKER_${String(speakerNumber).padStart(2, "0")}`,
    speaker_id: speakerNumber,
    is_user: isUser,
    start: Math.round(start * 10) / 10,
    end: Math.round((start + Math.max(1, words * 0.4)) * 10) / 10,
  };
}

async function say(text, speakerNumber, label) {
  const isUser = speakerNumber === 0;
  const tick = el("span", { class: "tick", text: "sending…" });
  const bubble = el("li", { class: `bubble ${isUser ? "me" : "them"}` },
    el("span", { class: "who", text: label || (isUser ? "You" : "Other") }),
    el("span", { class: "said", text }),
    tick);
  $("transcript").append(bubble);
  bubble.scrollIntoView({ block: "nearest" });
  const segment = segmentFor(text, speakerNumber, isUser);
  try {
    await api("POST", `/v1/users/${enc(state.uid)}/sessions/${enc(state.sessionId)}/segments`,
      { segments: [segment] });
    tick.textContent = "sent";
    $("sim-status").textContent = "Sent. The platform calls each installed app's webhook at most once a second.";
    setTimeout(refreshTraces, 1200);
  } catch (err) {
    tick.textContent = "failed";
    bubble.classList.add("failed");
    $("sim-status").textContent = err.message;
  }
}

function parseTranscript(text) {
  const trimmed = text.trim();
  if (!trimmed) throw new Error("the transcript is empty");
  if (trimmed.startsWith("[") || trimmed.startsWith("{")) {
    let data = JSON.parse(trimmed);
    if (!Array.isArray(data)) data = data.segments || data.transcript_segments;
    if (!Array.isArray(data) || !data.length) throw new Error("expected a JSON list of segments");
    return data.map((s) => ({
      text: String(s.text || ""),
      speaker: s.is_user ? 0 : Math.max(1, Number(s.speaker_id) || 1),
      label: s.is_user ? "You" : String(s.speaker || "Other"),
    }));
  }
  const speakers = [];
  const lines = [];
  trimmed.split(/\r?\n/).forEach((line, i) => {
    if (!line.trim() || line.trim().startsWith("#")) return;
    const match = /^\s*([^:]{1,64}?)\s*:\s*(\S.*?)\s*$/.exec(line);
    if (!match) throw new Error(`line ${i + 1}: expected "Speaker: text"`);
    if (!speakers.includes(match[1])) speakers.push(match[1]);
    lines.push({ text: match[2], speaker: speakers.indexOf(match[1]), label: match[1] });
  });
  return lines;
}

async function play() {
  if (state.playing) return;
  let lines;
  try {
    lines = parseTranscript($("transcript-text").value);
  } catch (err) {
    $("sim-status").textContent = err.message;
    return;
  }
  const interval = Math.max(0, Number($("play-interval").value) || 0) * 1000;
  state.playing = true;
  $("play").disabled = true;
  try {
    for (const [i, line] of lines.entries()) {
      if (i > 0 && interval) await sleep(interval);
      await say(line.text, line.speaker, line.label);
    }
  } finally {
    state.playing = false;
    $("play").disabled = false;
  }
}

async function finish() {
  try {
    await api("POST", `/v1/users/${enc(state.uid)}/sessions/${enc(state.sessionId)}/finish`);
    $("sim-status").textContent = `Conversation ${state.sessionId} finished; the next line starts a new one.`;
    const sid = state.sessionId;
    newSession();
    $("sim-status").textContent = `Finished ${sid}. Type to start a new conversation.`;
    setTimeout(refreshTraces, 1200);
    setTimeout(loadKnowledge, 1200);
  } catch (err) {
    $("sim-status").textContent = err.message;
  }
}

// --- The developer view: traces -----------------------------------------------------------

const OUTCOME_CLASS = {
  notified: "ok", message_sent: "ok", no_action: "quiet", quiet: "quiet",
  rate_limited: "warn", circuit_open: "warn",
};

function section(title, ...content) {
  return el("section", { class: "trace-section" }, el("h4", { text: title }), ...content);
}

function kv(pairs) {
  return el("dl", { class: "kv" }, pairs.filter(([, v]) => v !== undefined && v !== null && v !== "")
    .flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]));
}

function pre(text, cls) {
  return el("pre", { class: cls || "", text });
}

function traceDetail(t) {
  const parts = [];
  if (t.error) parts.push(el("p", { class: "trace-error", text: t.error }));
  if (t.request) {
    const query = Object.entries(t.request.query || {}).map(([k, v]) => `${k}=${v}`).join("&");
    parts.push(section("Webhook call", kv([
      ["request", `${t.request.method} ${t.request.url}${query ? "?" + query : ""}`],
      ["segments", t.request.segments],
    ])));
  }
  if (t.response) {
    parts.push(section("App's answer", kv([
      ["status", t.response.status ?? "none"],
      ["time", ms(t.response.seconds)],
      ["connected to", t.response.address],
    ]), t.response.body ? pre(t.response.body, "answer-body") : el("p", { class: "muted small", text: "(empty body)" })));
  }
  if (t.scopes) {
    const rows = Object.entries(t.scopes.decisions || {}).map(([name, why]) =>
      el("tr", {}, el("td", { text: name }), el("td", { class: why === "filled" ? "good" : "bad", text: why })));
    parts.push(section("Scopes", el("table", { class: "scopes" }, rows),
      kv([["granted", (t.scopes.granted || []).join(", ") || "none"], ["manifest", (t.scopes.manifest || []).join(", ")]])));
  }
  if (t.rate_limit) {
    parts.push(section("Rate limit", kv([
      ["decision", t.rate_limit.decision],
      ["backend", t.rate_limit.backend],
      ["interval", `${t.rate_limit.interval_s} s`],
      ["retry after", t.rate_limit.retry_after_s !== undefined ? `${t.rate_limit.retry_after_s} s` : ""],
    ])));
  }
  if (t.prompt) {
    const prompt = [];
    if (t.prompt.filled !== undefined) prompt.push(el("h5", { text: "Filled prompt" }), pre(t.prompt.filled, "filled-prompt"));
    prompt.push(el("h5", { text: "Template" }), pre(t.prompt.template || "", "template"));
    parts.push(section("Prompt", ...prompt));
  }
  const found = t.context && t.context.user_context;
  if (found && found.conversations && found.conversations.length) {
    parts.push(section("Context", kv([
      ["past conversations", found.conversations.join(", ")],
      ["found by", `${found.found_by} (words from the ${found.words_from})`],
    ])));
  }
  if (t.llm) {
    parts.push(section("LLM", kv([
      ["model", `${t.llm.provider} · ${t.llm.model}`],
      ["time", ms(t.llm.seconds)],
    ]), pre(t.llm.output || "(nothing: stay quiet)", "llm-output"),
    t.llm.raw && t.llm.raw !== t.llm.output ? el("details", {}, el("summary", { text: "raw output" }), pre(t.llm.raw)) : null));
  }
  if (t.notification) {
    parts.push(section("Notification", kv([
      ["title", t.notification.title],
      ["body", t.notification.body],
      ["id", t.notification.id],
      ["duplicate", t.notification.duplicate ? "yes" : ""],
    ])));
  }
  if (t.deliveries && t.deliveries.length) {
    const rows = t.deliveries.map((d) => el("tr", {},
      el("td", { text: d.provider }),
      el("td", { class: d.state === "delivered" ? "good" : d.state === "failed" ? "bad" : "", text: d.state }),
      el("td", { text: `${d.attempts} attempt${d.attempts === 1 ? "" : "s"}` }),
      el("td", { text: d.last_error || "" })));
    parts.push(section("Deliveries", el("table", { class: "deliveries" }, rows)));
  }
  return el("div", { class: "trace-detail" }, parts);
}

function traceItem(t) {
  const open = state.openTraces.has(t.id);
  const summary = t.notification ? t.notification.body : t.error || (t.outcome === "no_action" ? "no notification asked" : "");
  const head = el("button", { type: "button", class: "trace-head", "aria-expanded": open ? "true" : "false" },
    el("span", { class: `outcome ${OUTCOME_CLASS[t.outcome] || "bad"}`, text: (t.outcome || "?").replace(/_/g, " ") }),
    el("span", { class: "trace-kind", text: t.kind === "memory_creation" ? "memory" : `${(t.request || {}).segments ?? 0} seg` }),
    el("span", { class: "trace-summary", text: summary }),
    el("time", { text: new Date(t.created_at * 1000).toLocaleTimeString() }));
  const item = el("li", { class: `trace${open ? " open" : ""}`, dataset: { id: t.id, outcome: t.outcome || "" } }, head);
  if (open) item.append(traceDetail(t));
  head.addEventListener("click", () => {
    if (state.openTraces.has(t.id)) state.openTraces.delete(t.id); else state.openTraces.add(t.id);
    item.replaceWith(traceItem(t));
  });
  return item;
}

async function refreshTraces() {
  const list = $("traces");
  const note = $("dev-note");
  if (!state.appId) {
    list.replaceChildren();
    note.textContent = state.role === "user"
      ? "Traces are for app developers: sign in with the admin token or the app's secret."
      : "No apps yet: register one with POST /v1/apps or `nudge apps create`.";
    $("app-status").textContent = "";
    return;
  }
  const params = new URLSearchParams({ limit: "50" });
  if ($("only-user").checked && state.uid) params.set("uid", state.uid);
  if ($("only-session").checked && state.sessionId) params.set("session_id", state.sessionId);
  const appId = state.appId;
  try {
    const page = await api("GET", `/v1/apps/${enc(appId)}/traces?${params}`);
    if (appId !== state.appId) return;
    const status = page.app.status || "active";
    $("app-status").textContent = page.app.webhook_failing_since ? `${status} · webhook failing` : status;
    $("app-status").className = `badge ${status === "active" && !page.app.webhook_failing_since ? "ok" : "warn"}`;
    $("app-status").title = page.app.status_reason || "";
    $("trace-count").textContent = `${page.items.length} call${page.items.length === 1 ? "" : "s"}`;
    note.textContent = page.items.length ? "" : "No webhook calls yet. Say something in the conversation.";
    const key = JSON.stringify(page.items.map((t) => [t.id, t.outcome, (t.deliveries || []).map((d) => d.state)]));
    if (key === state.traceKey) return;
    state.traceKey = key;
    list.replaceChildren(...page.items.map(traceItem));
  } catch (err) {
    note.textContent = err.message;
  }
}

function scheduleTraces() {
  clearInterval(state.traceTimer);
  state.traceTimer = setInterval(() => {
    if (document.visibilityState === "visible" && state.token) refreshTraces();
  }, 2000);
}

// --- Wiring ------------------------------------------------------------------------------

function wire() {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const uid = $("uid-input").value.trim();
    signIn($("token-input").value.trim(), uid || null, Boolean(uid));
  });
  $("logout").addEventListener("click", () => {
    sessionStorage.removeItem("nudge.token");
    closeStream();
    state.token = null;
    showLogin("");
  });
  $("user-select").addEventListener("change", (event) => selectUser(event.target.value));
  $("app-select").addEventListener("change", (event) => {
    const url = new URL(location.href);
    url.searchParams.set("app", event.target.value);
    history.replaceState(null, "", url);
    pickApp();
  });
  for (const button of document.querySelectorAll(".speaker")) {
    button.addEventListener("click", () => setSpeaker(Number(button.dataset.speaker)));
  }
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("say").value.trim();
    if (!text || !state.uid) return;
    $("say").value = "";
    say(text, state.speaker);
  });
  $("load-toggle").addEventListener("click", () => { $("loader").hidden = !$("loader").hidden; });
  $("transcript-file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (file) $("transcript-text").value = await file.text();
  });
  $("play").addEventListener("click", play);
  $("read-all").addEventListener("click", readAll);
  $("show-archived").addEventListener("change", () => { state.notes.clear(); syncFeed(); });
  $("prefs-form").addEventListener("submit", (event) => {
    event.preventDefault();
    savePrefs();
  });
  $("new-session").addEventListener("click", newSession);
  $("finish").addEventListener("click", finish);
  for (const id of ["only-user", "only-session"]) {
    $(id).addEventListener("change", () => { state.traceKey = ""; refreshTraces(); });
  }
}

function start() {
  wire();
  tickClock();
  setInterval(tickClock, 30000);
  scheduleTraces();
  const params = new URLSearchParams(location.search);
  const fromUrl = params.get("token");
  if (fromUrl) {
    // Keep the token out of the address bar, the history and screenshots.
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? `?${rest}` : ""));
  }
  const token = fromUrl || sessionStorage.getItem("nudge.token");
  const uid = params.get("uid") || localStorage.getItem("nudge.uid");
  if (token) signIn(token, uid, params.has("uid")); else showLogin("");
}

document.addEventListener("DOMContentLoaded", start);
