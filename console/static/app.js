// The dispatch switchboard: state from one WebSocket (a snapshot, then events), actions
// through the REST API. No build step: this file is what the browser runs.
"use strict";

const I18N = {
  "zh-CN": {
    title: "融合通信调度台", login: "登录", username: "用户名", password: "密码", signin: "登录",
    logout: "退出", directory: "通讯录", search: "搜索 (/)", groupCall: "一键组呼", broadcast: "广播",
    rollcall: "点名", record: "录音", myPhone: "我的话机", activeCalls: "当前通话", noCalls: "没有通话",
    rooms: "会议室", events: "日志", call: "呼叫", hangup: "挂断", mute: "静音", unmute: "取消静音",
    deafen: "闭听", undeafen: "取消闭听", kick: "强拆", hold: "保持", resume: "恢复", barge: "强插",
    monitor: "监听", whisper: "耳语", online: "已连接", offline: "连接断开, 正在重连…",
    offlineState: "离线", idle: "空闲", ringing: "振铃", talking: "通话中", held: "保持",
    pending: "呼叫中", answered: "已接通", busy: "忙", "no-answer": "无应答", unreachable: "不可达",
    rejected: "拒接", cancelled: "已取消", failed: "失败", confirmed: "已确认", notConfirmed: "未确认",
    selectFirst: "请先勾选成员", needPhone: "请先填写我的话机号码",
    shortcuts: "快捷键: / 搜索 · G 组呼 · B 广播 · R 点名 · H 挂断当前通话 · M 静音",
    single: "单呼", group: "组呼", sip: "通话", members: "成员", useBrowser: "用浏览器通话 (耳麦)",
  },
  en: {
    title: "Dispatch switchboard", login: "Sign in", username: "User name", password: "Password",
    signin: "Sign in", logout: "Sign out", directory: "Directory", search: "Search (/)",
    groupCall: "Group call", broadcast: "Broadcast", rollcall: "Roll call", record: "Record",
    myPhone: "My phone", activeCalls: "Active calls", noCalls: "No calls", rooms: "Rooms",
    events: "Log", call: "Call", hangup: "Hang up", mute: "Mute", unmute: "Unmute",
    deafen: "Deafen", undeafen: "Undeafen", kick: "Kick", hold: "Hold", resume: "Resume",
    barge: "Barge in", monitor: "Monitor", whisper: "Whisper", online: "Connected",
    offline: "Connection lost, reconnecting…", offlineState: "offline", idle: "idle",
    ringing: "ringing", talking: "talking", held: "held", pending: "calling",
    answered: "answered", busy: "busy", "no-answer": "no answer", unreachable: "unreachable",
    rejected: "rejected", cancelled: "cancelled", failed: "failed", confirmed: "confirmed",
    notConfirmed: "not confirmed", selectFirst: "Select members first",
    needPhone: "Enter your own phone first",
    shortcuts: "Shortcuts: / search · G group call · B broadcast · R roll call · H hang up · M mute",
    single: "single", group: "group", sip: "call", members: "members",
    useBrowser: "Talk through this browser (headset)",
  },
};

const state = {
  lang: localStorage.getItem("lang") || (navigator.language.startsWith("zh") ? "zh-CN" : "en"),
  people: [], endpoints: {}, statuses: {}, calls: {}, rooms: [], selected: new Set(),
  me: null, ws: null, retry: 0, focusCall: null,
};
const $ = (id) => document.getElementById(id);
const t = (key) => (I18N[state.lang] && I18N[state.lang][key]) || I18N.en[key] || key;
// A string with {name} holes, filled from `vars`: tf("deputyFor", {person: "bob"}).
const tf = (key, vars = {}) => t(key).replace(/\{(\w+)\}/g, (m, name) =>
  (vars[name] === undefined || vars[name] === null ? "" : String(vars[name])));

// Features kept in their own files (incidents.js) plug in here. Each may have:
// onEvent(ev) before the page renders an event, render(), onLanguage(), onStart() once
// signed in, onStop() when signed out, callTools(call) -> extra nodes for a call card.
const features = [];
const eachFeature = (hook, ...args) => features.flatMap((f) => (f[hook] ? [f[hook](...args)] : []));

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "onclick") node.addEventListener("click", v);
    else if (k === "text") node.textContent = v;
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) node.append(c);
  return node;
}

function applyLanguage() {
  document.documentElement.lang = state.lang;
  $("lang").textContent = state.lang === "zh-CN" ? "English" : "中文";
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of document.querySelectorAll("[data-i18n-placeholder]"))
    node.placeholder = t(node.dataset.i18nPlaceholder);
  for (const node of document.querySelectorAll("[data-i18n-label]"))
    node.setAttribute("aria-label", t(node.dataset.i18nLabel));
  eachFeature("onLanguage");
  document.title = t("title");
  if (state.ws) setConn(state.ws.readyState === WebSocket.OPEN);
  render();
}

async function api(method, path, body, quiet = false) {
  const resp = await fetch(path, {
    method, credentials: "same-origin",
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = resp.status === 204 ? null : await resp.json().catch(() => null);
  if (!resp.ok) {
    const message = (data && data.message) || resp.statusText;
    if (!quiet) logLine(`${method} ${path}: ${resp.status} ${message}`);
    throw new Error(message);
  }
  return data;
}

function logLine(text) {
  const li = el("li", { text: `${new Date().toLocaleTimeString()} ${text}` });
  $("log").prepend(li);
  while ($("log").children.length > 200) $("log").lastChild.remove();
}

// ---- the event stream -------------------------------------------------------------
function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/api/events?batch=1`);
  state.ws = ws;
  ws.onopen = () => { state.retry = 0; setConn(true); };
  ws.onmessage = (msg) => {
    // Events published together (a group call's burst) come as one batch message.
    const data = JSON.parse(msg.data);
    if (data.type === "batch") data.events.forEach(onEvent);
    else onEvent(data);
  };
  ws.onclose = (ev) => {
    setConn(false);
    if (ev.code === 4401 || ev.code === 1008) { showLogin(); return; }
    // Back off, then resync from the snapshot the server sends on reconnect.
    const delay = Math.min(5000, 250 * 2 ** state.retry++);
    setTimeout(connect, delay);
  };
}

function setConn(up) {
  const node = $("conn");
  node.textContent = up ? t("online") : t("offline");
  node.className = "conn " + (up ? "up" : "down");
}

function onEvent(ev) {
  switch (ev.type) {
    case "snapshot": {
      const dir = ev.directory || {};
      state.people = dir.people || [];
      state.endpoints = Object.fromEntries((dir.endpoints || []).map((e) => [e.id, e]));
      state.calls = Object.fromEntries((ev.calls || []).map((c) => [c.id, c]));
      state.rooms = ev.rooms || [];
      break;
    }
    case "EndpointStatusChanged":
      if (state.endpoints[ev.endpoint_id]) state.endpoints[ev.endpoint_id].status = ev.new;
      for (const p of state.people) if (p.endpoints.includes(ev.endpoint_id)) p.status = personStatus(p);
      break;
    case "DirectoryChanged":
      api("GET", "/api/directory").then((dir) => {
        state.people = dir.people || [];
        state.endpoints = Object.fromEntries((dir.endpoints || []).map((e) => [e.id, e]));
        render();
      }).catch(() => {});
      break;
    case "CallChanged":
      state.calls[ev.call.id] = ev.call;
      if (ev.call.state === "ended") dropPeer(ev.call.id);
      if (ev.call.state === "ended") setTimeout(() => { delete state.calls[ev.call.id]; render(); }, 4000);
      break;
    case "CallEnded":
      logLine(`${ev.call_id}: ${ev.reason}`);
      break;
    case "LegStateChanged": case "BridgeClosed": case "TalkerChanged":
      if (ev.type === "LegStateChanged") logLine(`${ev.leg_id} ${ev.old} → ${ev.new} ${ev.reason || ""}`);
      if (ev.type === "TalkerChanged") markTalker(ev);
      refreshSipCalls();
      break;
    default:
      break;
  }
  eachFeature("onEvent", ev);
  render();
}

function personStatus(p) {
  const order = ["talking", "held", "ringing", "idle", "offline"];
  const seen = p.endpoints.map((id) => (state.endpoints[id] || {}).status || "offline");
  return order.find((s) => seen.includes(s)) || "offline";
}

function markTalker(ev) {
  for (const call of Object.values(state.calls)) {
    if (call.bridge_id !== ev.bridge_id) continue;
    const set = new Set(call.talking || []);
    if (ev.talking) set.add(ev.leg_id); else set.delete(ev.leg_id);
    call.talking = [...set];
  }
}

let sipRefresh = null;
function refreshSipCalls() {
  // Phone-to-phone calls are not CallChanged events: fetch the live list, debounced.
  clearTimeout(sipRefresh);
  sipRefresh = setTimeout(async () => {
    try {
      const calls = await api("GET", "/api/calls");
      const live = new Set(calls.map((c) => c.id));
      for (const c of calls) state.calls[c.id] = { ...(state.calls[c.id] || {}), ...c };
      for (const [id, c] of Object.entries(state.calls))
        if (!live.has(id) && c.state !== "ended") delete state.calls[id];
      render();
    } catch (e) { /* logged */ }
  }, 150);
}

// ---- rendering ------------------------------------------------------------------------
function render() {
  if (!state.me) return;
  renderPeople();
  renderCalls();
  renderRooms();
  eachFeature("render");
}

function renderPeople() {
  const query = $("search").value.trim().toLowerCase();
  const list = $("people");
  list.replaceChildren();
  for (const p of state.people) {
    const status = p.status || personStatus(p);
    // What gets dialled: the preferred endpoint's address (a SIP user or a number).
    const first = state.endpoints[p.endpoints[0]];
    const target = first ? first.address : p.name;
    if (query && !target.toLowerCase().includes(query) && !p.name.toLowerCase().includes(query)) continue;
    const box = el("input", { type: "checkbox", "aria-label": `Select ${target}`,
                              checked: state.selected.has(target) });
    box.addEventListener("change", () => {
      if (box.checked) state.selected.add(target); else state.selected.delete(target);
    });
    list.append(el("li", { "data-person": target, "data-status": status },
      box,
      el("span", { class: `lamp ${status}`, role: "img", "aria-label": `${target} ${status}`,
                   title: t(status === "offline" ? "offlineState" : status) }),
      el("span", { class: "name", text: p.name === target ? p.name : `${p.name} (${target})` }),
      el("span", { class: "muted", text: t(status === "offline" ? "offlineState" : status) }),
      el("button", { type: "button", "aria-label": `Call ${target}`, text: t("call"),
                     onclick: () => placeCall([target], "single") })));
  }
}

function renderCalls() {
  const box = $("calls");
  box.replaceChildren();
  const calls = Object.values(state.calls).sort((a, b) => (a.created || 0) - (b.created || 0));
  $("no-calls").hidden = calls.length > 0;
  for (const call of calls) {
    const talking = new Set(call.talking || []);
    const legs = el("div", { class: "legs" });
    for (const leg of call.legs || []) {
      const name = leg.target;
      const row = el("div", { class: "leg" + (talking.has(leg.leg_id) ? " talking" : ""),
                              "data-leg": leg.leg_id, "data-outcome": leg.outcome || "" },
        el("span", { class: "target", text: name }),
        el("span", { class: "state", text: legText(leg) }));
      if (call.state !== "ended" && (leg.state === "up" || leg.state === "held")) {
        const act = (action, label) => el("button", {
          type: "button", "aria-label": `${label} ${name}`, text: t(action),
          onclick: () => api("POST", `/api/calls/${call.id}/legs/${leg.leg_id}/${action}`)
            .then(applyCall).catch(() => {}) });
        row.append(leg.muted ? act("unmute", "Unmute") : act("mute", "Mute"),
                   leg.deaf ? act("undeafen", "Undeafen") : act("deafen", "Deafen"),
                   leg.held ? act("resume", "Resume") : act("hold", "Hold"),
                   act("kick", "Kick"),
                   el("button", { type: "button", "aria-label": `Whisper to ${name}`, text: t("whisper"),
                                  onclick: () => join(call.id, "whisper", leg.leg_id) }));
      }
      legs.append(row);
    }
    const header = el("header", {},
      el("strong", { text: `${call.id} · ${t(call.mode) || call.mode}` }),
      call.state === "ended" ? el("span", { class: "muted", text: " ✓" }) : "");
    const tools = el("div", { class: "actions" });
    if (call.recording_id && call.state === "ended") {
      tools.append(el("audio", { controls: true, preload: "none", "aria-label": `Play recording of ${call.id}`,
                                 src: `/api/recordings/${call.recording_id}/audio` }));
    }
    if (call.state !== "ended" && call.mode !== "sip") {
      tools.append(el("button", { type: "button", "aria-label": call.record ? `Stop recording ${call.id}` : `Record ${call.id}`,
        text: call.record ? `■ ${t("record")}` : `● ${t("record")}`,
        onclick: () => api("POST", `/api/calls/${call.id}/recording`, { on: !call.record }).then(applyCall).catch(() => {}) }));
    }
    for (const nodes of eachFeature("callTools", call)) tools.append(...nodes);
    if (call.state !== "ended") {
      tools.append(
        el("button", { type: "button", "aria-label": `Barge into ${call.id}`, text: t("barge"),
                       onclick: () => join(call.id, "barge") }),
        el("button", { type: "button", "aria-label": `Monitor ${call.id}`, text: t("monitor"),
                       onclick: () => join(call.id, "monitor") }),
        el("button", { type: "button", class: "danger", "aria-label": "Hang up",
                       "data-call": call.id, text: t("hangup"),
                       onclick: () => api("DELETE", `/api/calls/${call.id}`).then(applyCall).catch(() => {}) }));
    }
    box.append(el("div", { class: "call", "data-call": call.id, "data-state": call.state,
                           role: "group", "aria-label": `Call ${call.id}` }, header, legs, tools));
    state.focusCall = call.state !== "ended" ? call.id : state.focusCall;
  }
}

function legText(leg) {
  let text = t(leg.state === "up" ? "answered" : leg.outcome && leg.outcome !== "pending"
    && leg.state === "ended" ? leg.outcome : leg.state === "new" ? "pending" : leg.state);
  if (leg.confirmed === true) text += ` · ${t("confirmed")}`;
  if (leg.confirmed === false) text += ` · ${t("notConfirmed")}`;
  if (leg.relation && leg.relation !== "member") text += ` · ${t(leg.relation)}`;
  if (leg.muted) text += ` · ${t("mute")}`;
  return text;
}

function renderRooms() {
  const box = $("rooms");
  box.replaceChildren();
  for (const room of state.rooms || []) {
    box.append(el("div", { class: "call" },
      el("strong", { text: `${room.number} ${room.name || ""}` }),
      el("div", { class: "muted", text: (room.members || []).map((m) => m.peer).join(", ") })));
  }
}

function applyCall(call) {
  if (call && call.id) state.calls[call.id] = call;
  render();
}

// ---- the dispatcher's own voice: WebRTC from this browser ----------------------------
const peers = {};  // call id -> RTCPeerConnection

async function browserOffer() {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  const pc = new RTCPeerConnection({ iceServers: [] });
  for (const track of stream.getTracks()) pc.addTrack(track, stream);
  pc.ontrack = (ev) => {
    const audio = $("remote-audio");
    audio.srcObject = ev.streams[0] || new MediaStream([ev.track]);
    audio.play().catch(() => {});
  };
  await pc.setLocalDescription(await pc.createOffer());
  // No trickle ICE: wait for the candidates, then send one offer.
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
    setTimeout(resolve, 2000);
  });
  return { pc, sdp: pc.localDescription.sdp };
}

function useBrowser() { return $("use-browser").checked; }

// ---- actions ---------------------------------------------------------------------------
async function placeCall(targets, mode) {
  if (!targets.length) { logLine(t("selectFirst")); return; }
  const body = { targets, mode, record: $("record").checked };
  if (useBrowser()) {
    try {
      const { pc, sdp } = await browserOffer();
      const res = await api("POST", "/api/calls/browser", { ...body, sdp });
      await pc.setRemoteDescription({ type: "answer", sdp: res.sdp });
      peers[res.call.id] = pc;
      applyCall(res.call);
      logLine(`${res.call.id}: ${mode} → ${targets.join(", ")} (browser)`);
    } catch (e) { logLine(String(e)); }
    return;
  }
  const call = await api("POST", "/api/calls", body).catch(() => null);
  if (call) { applyCall(call); logLine(`${call.id}: ${mode} → ${targets.join(", ")}`); }
}

async function join(callId, relation, legId) {
  const body = {};
  if (legId) body.leg_id = legId;
  let pc = null;
  if (useBrowser()) {
    const offer = await browserOffer();
    pc = offer.pc; body.sdp = offer.sdp;
  } else {
    const phone = $("my-phone").value.trim();
    if (!phone) { logLine(t("needPhone")); $("my-phone").focus(); return; }
    body.phone = phone;
  }
  const res = await api("POST", `/api/calls/${callId}/${relation}`, body).catch(() => null);
  if (!res) { if (pc) pc.close(); return; }
  if (pc) { await pc.setRemoteDescription({ type: "answer", sdp: res.sdp }); peers[callId] = pc; }
  applyCall(res.call);
}

function dropPeer(callId) {
  if (peers[callId]) { peers[callId].close(); delete peers[callId]; }
}

function selected() { return [...state.selected]; }

function currentCall() {
  // Never a plan's command room (confirm): one key must not call a whole response off.
  const live = Object.values(state.calls).filter((c) => c.state !== "ended" && !c.confirm);
  return live.length ? live[live.length - 1] : null;
}

function shortcuts(ev) {
  const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(ev.target.tagName) || ev.target.isContentEditable;
  if ((typing && ev.key !== "Escape") || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const key = ev.key.toLowerCase();
  if (key === "/") { ev.preventDefault(); $("search").focus(); }
  else if (key === "g") placeCall(selected(), "group");
  else if (key === "b") placeCall(selected(), "broadcast");
  else if (key === "r") placeCall(selected(), "rollcall");
  else if (key === "h") { const c = currentCall(); if (c) api("DELETE", `/api/calls/${c.id}`).then(applyCall).catch(() => {}); }
  else if (key === "escape") ev.target.blur();
}

// ---- session -------------------------------------------------------------------------------
function showLogin() {
  state.me = null;
  $("board").hidden = true; $("logout").hidden = true; $("login-view").hidden = false;
  $("who").textContent = "";
  eachFeature("onStop");
}

async function start() {
  try {
    state.me = await api("GET", "/api/auth/me", undefined, true);
  } catch (e) { showLogin(); return; }
  const op = state.me.operator || {};
  $("who").textContent = `${op.display_name || op.name || ""} · ${op.role || ""}`;
  $("login-view").hidden = true; $("board").hidden = false; $("logout").hidden = false;
  eachFeature("onStart");
  render();
  connect();
}

document.addEventListener("DOMContentLoaded", () => {
  $("lang").addEventListener("click", () => {
    state.lang = state.lang === "zh-CN" ? "en" : "zh-CN";
    localStorage.setItem("lang", state.lang);
    applyLanguage();
  });
  $("login").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = new FormData(ev.target);
    try {
      await api("POST", "/api/auth/login", { username: form.get("username"), password: form.get("password") });
      $("login-error").textContent = "";
      await start();
    } catch (e) { $("login-error").textContent = e.message; }
  });
  $("logout").addEventListener("click", async () => {
    await api("POST", "/api/auth/logout").catch(() => {});
    if (state.ws) state.ws.close();
    showLogin();
  });
  $("search").addEventListener("input", renderPeople);
  $("group-call").addEventListener("click", () => placeCall(selected(), "group"));
  $("broadcast").addEventListener("click", () => placeCall(selected(), "broadcast"));
  $("rollcall").addEventListener("click", () => placeCall(selected(), "rollcall"));
  $("my-phone").value = localStorage.getItem("myPhone") || "";
  $("my-phone").addEventListener("change", () => localStorage.setItem("myPhone", $("my-phone").value));
  document.addEventListener("keydown", shortcuts);
  applyLanguage();
  start();
});
