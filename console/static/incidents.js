// Incidents (接报 / 事件) on the switchboard: the active list, the new-incident form,
// one-click incidents from calls, the incident's detail (header, ack board, plan
// activation, tasks, timeline, messages, recordings, evidence pack) and an offline map
// of the nearest resources. Loaded after app.js and uses its helpers ($, el, t, tf,
// api, state); plugs into the page through `features`. The incident part of the page
// follows the same WebSocket as the rest: IncidentChanged, TimelineAppended,
// ResponseChanged and QueueChanged, and a fresh snapshot after a reconnect.
"use strict";

(() => {
  Object.assign(I18N["zh-CN"], {
    views: "视图", viewSwitchboard: "调度台", viewIncidents: "事件",
    newIncident: "新建事件", createIncident: "创建事件", incomingCalls: "来电",
    activeIncidents: "当前事件", noIncidents: "没有进行中的事件", noIncoming: "没有来电",
    pickIncident: "选择一个事件查看详情", incidentSections: "事件详情",
    fTitle: "标题", fType: "事件类型", fLevel: "事件级别", fLat: "纬度", fLon: "经度",
    fAddress: "地址", fDescription: "事件描述", create: "创建", save: "保存", cancel: "取消",
    edit: "编辑", editIncident: "编辑事件", waiting: "排队中", answering: "接听中",
    queued: "排队来电", queuedCalls: "排队来电", activeCall: "通话", openIncident: "事件 #{id}",
    openIncidentLabel: "打开事件 {title}",
    createFromCall: "从来电 {call} 创建事件", reported: "接报", reporter: "报警人",
    levelFmt: "{r}级", levelLong: "{r}级（{name}）",
    levelName1: "特别重大", levelName2: "重大", levelName3: "较大", levelName4: "一般",
    status_reported: "已接报", status_verified: "已核实", status_responding: "响应中",
    status_closed: "已关闭",
    to_verified: "核实", to_responding: "转入响应", to_closed: "关闭事件", to_reported: "重新打开",
    raiseLevel: "升级", lowerLevel: "降级", raiseLevelLabel: "升级到 {level}",
    lowerLevelLabel: "降级到 {level}",
    tabBoard: "应答看板", tabMap: "地图与资源", tabRecordings: "录音与证据",
    plan: "预案", noPlans: "没有适用于此类事件的预案", responseLevel: "响应级别",
    activatePlan: "启动预案", endResponse: "结束响应", confirmEnd: "再次点击确认结束响应",
    ackBoard: "应答看板", noResponse: "尚未启动预案",
    responseSummary: "预案「{plan}」· {level}响应 · {state} · {time} 启动",
    resp_active: "进行中", resp_ended: "已结束", resp_interrupted: "已中断",
    role: "角色", person: "人员", state: "状态", endpoint: "终端", attempts: "呼叫次数",
    deputyFor: "代 {person}",
    rs_pending: "待呼叫", rs_ringing: "振铃中", rs_answered: "已接听", rs_confirmed: "已确认",
    rs_left: "已离开", rs_unreachable: "未能联系", rs_escalated: "已升级", "rs_stood-down": "已解除",
    rs_ended: "已结束",
    tasks: "任务", noTasks: "没有任务", taskDue: "截止 {time}", taskOverdue: "已超时",
    timeline: "时间线", message: "消息", messagePlaceholder: "输入消息, Ctrl+Enter 发送", send: "发送",
    system: "系统",
    recordings: "录音", noRecordings: "没有录音", recordingOf: "录音 {id}（{call}，{time}）",
    playRecording: "播放录音 {id}", review: "复盘", downloadEvidence: "下载证据包",
    nearestResources: "最近的应急资源", dispatched: "已调度资源", noDispatched: "尚未调度资源",
    noResources: "附近没有应急资源", resourcesUnavailable: "应急资源服务暂不可用",
    noLocation: "事件没有坐标, 无法绘制地图 (在编辑中填写经纬度)",
    mapLabel: "事件「{title}」周边地图: 最近的 {n} 个应急资源, 比例尺 {scale}",
    legend: "图例", incidentSite: "事发地点", callRes: "呼叫", dispatchRes: "调度",
    callResLabel: "呼叫 {name}", dispatchResLabel: "调度 {name}", quantity: "数量",
    quantityOf: "{name} 调度数量", release: "收回", releaseLabel: "收回 {name}",
    noContact: "没有联系人", inStock: "库存 {n}", distance: "距离 {d}", close: "关闭",
    kind_team: "救援队伍", kind_expert: "专家", kind_supply: "物资", kind_equipment: "装备",
    kind_shelter: "避难场所", kind_vehicle: "车辆",
    res_available: "可用", res_dispatched: "已调度", res_unavailable: "不可用",
    disp_active: "在途/在场", disp_released: "已收回",
    tl_created: "创建事件「{title}」（{type}，{level}）",
    tl_status: "事件状态: {old} → {new}", tl_level: "事件级别: {old} → {new}",
    tl_updated: "修改了{fields}",
    tl_callAttached: "关联来电 {call}（来电号码 {caller}）", tl_recording: "关联录音 {id}",
    tl_callPlaced: "发起呼叫 {call} → {targets}", tl_callEnded: "呼叫 {call} 结束: {reason}",
    tl_leg: "{target} {what}（呼叫 {call}）", tl_legConfirmed: "按 1 确认",
    tl_message: "留言: {text}",
    tl_activated: "启动预案「{plan}」（{level}响应），呼叫 {n} 名响应人",
    tl_interrupted: "响应中断: {reason}",
    tl_responder: "{person}（{role}）{state}", tl_responderDeputy: "{person}（{role}，代 {of}）{state}",
    tl_escalated: "{person}（{role}）超时未确认，转呼替补 {deputy}",
    tl_escalatedNoDeputy: "{person}（{role}）超时未确认，无替补可呼叫",
    tl_notice: "向 {person} 发送短信通知（{reason}）: {text}",
    tl_noticeFailed: "向 {person} 发送短信通知失败（{reason}）: {error}",
    reason_unreachable: "未能联系", "reason_stand-down": "解除待命", reason_closing: "响应结束",
    tl_responseLevel: "响应级别 {old} → {new}{more}", tl_mobilised: "，增派 {people}",
    tl_stoodDown: "，解除 {people}",
    tl_ended: "结束响应「{plan}」: {reason}",
    tl_taskDone: "完成任务「{title}」", tl_taskReopened: "重新打开任务「{title}」",
    tl_evidence: "导出证据包 {file}",
    tl_dispatched: "调度{kind}「{name}」{qty}{dist}", tl_released: "收回{kind}「{name}」{qty}",
    tl_contactCalled: "呼叫{kind}「{name}」的联系人 {contact}（{phone}）",
    field_title: "标题", field_type: "类型", field_location: "位置", field_lat: "纬度", field_lon: "经度", field_address: "地址",
    field_reporter: "报警人", field_reporter_phone: "报警电话", field_description: "描述",
    leg_up: "已接通", leg_ringing: "振铃", leg_new: "呼叫中", leg_held: "保持", leg_ended: "已挂断",
    tl_action: "{action} {target}{result}", tl_actionFailed: "（失败: {result}）",
    "act_call.create": "发起呼叫", "act_call.end": "结束通话", "act_call.leg": "操作通话分支",
    "act_call.add_member": "加入成员", "act_call.lock": "锁定/解锁通话", "act_call.recording": "切换录音",
    "act_call.barge": "强插", "act_call.monitor": "监听", "act_call.whisper": "耳语",
    "act_call.transfer": "转接", "act_call.hangup": "挂断", "act_queue.answer": "接听排队来电",
  });
  Object.assign(I18N.en, {
    views: "Views", viewSwitchboard: "Switchboard", viewIncidents: "Incidents",
    newIncident: "New incident", createIncident: "Create incident", incomingCalls: "Calls",
    activeIncidents: "Active incidents", noIncidents: "No active incidents", noIncoming: "No calls",
    pickIncident: "Pick an incident to see it", incidentSections: "Incident",
    fTitle: "Title", fType: "Type", fLevel: "Level", fLat: "Latitude", fLon: "Longitude",
    fAddress: "Address", fDescription: "Description", create: "Create", save: "Save",
    cancel: "Cancel", edit: "Edit", editIncident: "Edit incident", waiting: "waiting",
    answering: "picking up", queued: "Queued call", queuedCalls: "Waiting callers", activeCall: "Call", openIncident: "Incident #{id}",
    openIncidentLabel: "Open incident {title}",
    createFromCall: "Create incident from call {call}", reported: "Reported", reporter: "Caller",
    levelFmt: "Level {l}", levelLong: "Level {l} ({name})",
    levelName1: "extraordinarily serious", levelName2: "serious", levelName3: "relatively serious",
    levelName4: "general",
    status_reported: "reported", status_verified: "verified", status_responding: "responding",
    status_closed: "closed",
    to_verified: "Verify", to_responding: "Start response", to_closed: "Close incident",
    to_reported: "Reopen",
    raiseLevel: "Raise level", lowerLevel: "Lower level", raiseLevelLabel: "Raise level to {level}",
    lowerLevelLabel: "Lower level to {level}",
    tabBoard: "Ack board", tabMap: "Map & resources", tabRecordings: "Recordings & evidence",
    plan: "Plan", noPlans: "No plan for this incident type", responseLevel: "Response level",
    activatePlan: "Activate plan", endResponse: "End response", confirmEnd: "Click again to end the response",
    ackBoard: "Acknowledgement board", noResponse: "No plan activated yet",
    responseSummary: "Plan “{plan}” · {level} response · {state} · started {time}",
    resp_active: "active", resp_ended: "ended", resp_interrupted: "interrupted",
    role: "Role", person: "Person", state: "State", endpoint: "Endpoint", attempts: "Attempts",
    deputyFor: "deputy for {person}",
    rs_pending: "pending", rs_ringing: "ringing", rs_answered: "answered", rs_confirmed: "confirmed",
    rs_left: "left", rs_unreachable: "unreachable", rs_escalated: "escalated",
    "rs_stood-down": "stood down", rs_ended: "ended",
    tasks: "Tasks", noTasks: "No tasks", taskDue: "due {time}", taskOverdue: "overdue",
    timeline: "Timeline", message: "Message", messagePlaceholder: "Type a message, Ctrl+Enter sends",
    send: "Send", system: "system",
    recordings: "Recordings", noRecordings: "No recordings", recordingOf: "Recording {id} ({call}, {time})",
    playRecording: "Play recording {id}", review: "Review", downloadEvidence: "Download evidence pack",
    nearestResources: "Nearest resources", dispatched: "Dispatched resources",
    noDispatched: "Nothing dispatched yet", noResources: "No resources nearby",
    resourcesUnavailable: "Resources are not available now",
    noLocation: "The incident has no coordinates: no map (add latitude and longitude in Edit)",
    mapLabel: "Map around incident “{title}”: the {n} nearest resources, scale {scale}",
    legend: "Legend", incidentSite: "Incident", callRes: "Call", dispatchRes: "Dispatch",
    callResLabel: "Call {name}", dispatchResLabel: "Dispatch {name}", quantity: "Quantity",
    quantityOf: "Quantity of {name} to dispatch", release: "Release", releaseLabel: "Release {name}",
    noContact: "No contact", inStock: "{n} in stock", distance: "{d} away", close: "Close",
    kind_team: "Rescue team", kind_expert: "Expert", kind_supply: "Supplies",
    kind_equipment: "Equipment", kind_shelter: "Shelter", kind_vehicle: "Vehicle",
    res_available: "available", res_dispatched: "dispatched", res_unavailable: "unavailable",
    disp_active: "out", disp_released: "released",
    tl_created: "Created the incident “{title}” ({type}, {level})",
    tl_status: "Status: {old} → {new}", tl_level: "Incident level: {old} → {new}",
    tl_updated: "Changed {fields}",
    tl_callAttached: "Call {call} from {caller} attached", tl_recording: "Recording {id} attached",
    tl_callPlaced: "Call {call} placed to {targets}", tl_callEnded: "Call {call} ended: {reason}",
    tl_leg: "{target} {what} (call {call})", tl_legConfirmed: "pressed 1",
    tl_message: "Message: {text}",
    tl_activated: "Activated plan “{plan}” ({level} response), calling {n} responders",
    tl_interrupted: "Response interrupted: {reason}",
    tl_responder: "{person} ({role}) {state}", tl_responderDeputy: "{person} ({role}, deputy for {of}) {state}",
    tl_escalated: "{person} ({role}) not confirmed in time: calling deputy {deputy}",
    tl_escalatedNoDeputy: "{person} ({role}) not confirmed in time: no deputy to call",
    tl_notice: "Text notice to {person} ({reason}): {text}",
    tl_noticeFailed: "Text notice to {person} failed ({reason}): {error}",
    reason_unreachable: "unreachable", "reason_stand-down": "stand down", reason_closing: "response ended",
    tl_responseLevel: "Response level {old} → {new}{more}", tl_mobilised: "; mobilised {people}",
    tl_stoodDown: "; stood down {people}",
    tl_ended: "Ended the response “{plan}”: {reason}",
    tl_taskDone: "Task done: “{title}”", tl_taskReopened: "Task reopened: “{title}”",
    tl_evidence: "Exported the evidence pack {file}",
    tl_dispatched: "Dispatched {kind} “{name}”{qty}{dist}", tl_released: "Released {kind} “{name}”{qty}",
    tl_contactCalled: "Called {contact} ({phone}) of {kind} “{name}”",
    field_title: "title", field_type: "type", field_location: "location", field_lat: "latitude", field_lon: "longitude", field_address: "address",
    field_reporter: "caller", field_reporter_phone: "caller's phone", field_description: "description",
    leg_up: "answered", leg_ringing: "ringing", leg_new: "calling", leg_held: "on hold", leg_ended: "hung up",
    tl_action: "{action} {target}{result}", tl_actionFailed: " (failed: {result})",
    "act_call.create": "Placed a call", "act_call.end": "Ended call", "act_call.leg": "Acted on call leg",
    "act_call.add_member": "Added a member to", "act_call.lock": "Locked/unlocked call",
    "act_call.recording": "Switched recording of", "act_call.barge": "Barged into",
    "act_call.monitor": "Monitored", "act_call.whisper": "Whispered in", "act_call.transfer": "Transferred",
    "act_call.hangup": "Hung up", "act_queue.answer": "Picked up queued call",
  });

  const ROMAN = ["Ⅰ", "Ⅱ", "Ⅲ", "Ⅳ"];
  const LEVELS = ["I", "II", "III", "IV"];
  const KINDS = ["team", "expert", "supply", "equipment", "shelter", "vehicle"];
  const STOCK = new Set(["supply", "equipment"]);
  // Kind-specific symbol and colour: told apart by shape as well as by colour.
  const SYMBOL = {
    team: { shape: "triangle", color: "#ef4444" }, expert: { shape: "circle", color: "#a78bfa" },
    supply: { shape: "square", color: "#f59e0b" }, equipment: { shape: "diamond", color: "#22d3ee" },
    shelter: { shape: "house", color: "#22c55e" }, vehicle: { shape: "down", color: "#60a5fa" },
  };
  const KM_PER_DEG = 6371.0088 * Math.PI / 180;  // the WGS-84 mean radius, as dispatch/geo.py
  const REFRESH_KINDS = new Set(["response.activated", "response.ended", "response.level",
    "response.interrupted", "task.done", "task.reopened", "recording.attached", "call.attached",
    "resource.dispatched", "resource.released", "incident.updated", "incident.level"]);

  const inc = {
    started: false, view: localStorage.getItem("view") || "board", panel: "inc-p-board",
    types: [], typeByCode: {}, list: {}, queue: [], current: null, timeline: [], seen: new Set(),
    plans: [], resources: null, resourcesError: null, dispatches: null,
    markers: [], mapSel: null, qty: {}, mapPinned: false, dirty: new Set(), endArmed: null,
  };
  const ALL = ["list", "calls", "head", "board", "tasks", "timeline", "recs", "map", "plans", "forms"];
  const dirty = (...parts) => { for (const p of parts) inc.dirty.add(p); };
  const isDirty = (part) => inc.dirty.delete(part);

  // ---- words ------------------------------------------------------------------------------
  const levelText = (n) => (n >= 1 && n <= 4 ? tf("levelFmt", { r: ROMAN[n - 1], l: LEVELS[n - 1] }) : String(n ?? ""));
  const levelLong = (n) => tf("levelLong", { r: ROMAN[n - 1], l: LEVELS[n - 1], name: t(`levelName${n}`) });
  const zh = () => state.lang === "zh-CN";
  const typeText = (code, item) => {
    const kind = inc.typeByCode[code];
    if (kind) return zh() ? kind.zh : kind.en;
    if (item) return (zh() ? item.type_zh : item.type_en) || code;
    return code || "";
  };
  const statusText = (s) => t(`status_${s}`);
  const kindText = (k) => t(`kind_${k}`);
  const stateText = (s) => t(`rs_${s}`);
  const clock = (at) => (at ? new Date(at * 1000).toLocaleTimeString(state.lang, { hour12: false }) : "");
  const when = (at) => {
    if (!at) return "";
    const d = new Date(at * 1000);
    if (d.toDateString() === new Date().toDateString()) return clock(at);
    return d.toLocaleString(state.lang, { hour12: false, month: "2-digit", day: "2-digit",
                                          hour: "2-digit", minute: "2-digit" });
  };
  const km = (m) => (m === null || m === undefined ? "—"
    : m < 1000 ? `${Math.round(m)} m` : `${(m / 1000).toFixed(m < 10000 ? 2 : 1)} km`);
  const people = (list) => (list || []).join(zh() ? "、" : ", ");

  function showError(e) {
    const node = $("inc-error");
    if (node) node.textContent = e ? String(e.message || e) : "";
  }
  // An action: its error goes to the panel's alert line (and app.js's log).
  async function act(promise) {
    try { const result = await promise; showError(null); return result; }
    catch (e) { showError(e); return null; }
  }

  // ---- views (switchboard | incidents) ---------------------------------------------------
  function showView(view) {
    inc.view = view === "incidents-view" ? view : "board";
    localStorage.setItem("view", inc.view);
    for (const tab of document.querySelectorAll("#views [role=tab]")) {
      const on = tab.dataset.view === inc.view;
      tab.setAttribute("aria-selected", String(on));
      tab.tabIndex = on ? 0 : -1;
    }
    $("board").hidden = inc.view !== "board";
    $("incidents-view").hidden = inc.view !== "incidents-view";
    if (inc.view === "incidents-view") dirty("map");
    render();
  }

  function showPanel(panel) {
    inc.panel = panel;
    for (const tab of document.querySelectorAll(".subtabs [role=tab]")) {
      const on = tab.dataset.panel === panel;
      tab.setAttribute("aria-selected", String(on));
      tab.tabIndex = on ? 0 : -1;
      $(tab.dataset.panel).hidden = !on;
    }
    if (panel === "inc-p-map") dirty("map");
    render();
  }

  // Arrow keys move along a tab list (WAI-ARIA tabs pattern); the tab gets focus and opens.
  function tabKeys(list, open) {
    list.addEventListener("keydown", (ev) => {
      const tabs = [...list.querySelectorAll("[role=tab]")];
      const i = tabs.indexOf(document.activeElement);
      if (i < 0) return;
      let next = null;
      if (ev.key === "ArrowRight") next = tabs[(i + 1) % tabs.length];
      else if (ev.key === "ArrowLeft") next = tabs[(i + tabs.length - 1) % tabs.length];
      else if (ev.key === "Home") next = tabs[0];
      else if (ev.key === "End") next = tabs[tabs.length - 1];
      if (!next) return;
      ev.preventDefault();
      next.focus();
      open(next);
    });
  }

  // ---- forms --------------------------------------------------------------------------------
  function field(key, input) {
    return el("label", { class: `f-${input.name}` }, el("span", { "data-i18n": key, text: t(key) }), input);
  }

  function typeSelect(name = "type") {
    const select = el("select", { name, required: true });
    fillTypes(select);
    return select;
  }

  function fillTypes(select) {
    const value = select.value;
    select.replaceChildren();
    const groups = {};
    for (const kind of inc.types) {
      if (kind.code === kind.category) {
        groups[kind.code] = el("optgroup", { label: zh() ? kind.zh : kind.en });
        groups[kind.code].append(el("option", { value: kind.code, text: zh() ? kind.zh : kind.en }));
        select.append(groups[kind.code]);
      }
    }
    for (const kind of inc.types) {
      if (kind.code !== kind.category && groups[kind.category])
        groups[kind.category].append(el("option", { value: kind.code, text: zh() ? kind.zh : kind.en }));
    }
    if (value) select.value = value;
  }

  function levelSelect(name, value) {
    const select = el("select", { name });
    for (let n = 1; n <= 4; n++) select.append(el("option", { value: String(n), text: levelLong(n) }));
    select.value = String(value || 4);
    return select;
  }

  function fillLevels(select) {
    for (const option of select.options) option.textContent = levelLong(Number(option.value));
  }

  // The fields of an incident: the new-incident form and the edit form share them.
  function buildForm(form, values, submitKey) {
    form.replaceChildren(
      field("fTitle", el("input", { name: "title", required: true, maxlength: 200, value: values.title || "" })),
      field("fType", typeSelect()),
      field("fLevel", levelSelect("level", values.level)),
      el("div", { class: "coords" },
        field("fLat", el("input", { name: "lat", type: "number", step: "any", min: -90, max: 90,
                                     value: values.location ? values.location.lat : "" })),
        field("fLon", el("input", { name: "lon", type: "number", step: "any", min: -180, max: 180,
                                     value: values.location ? values.location.lon : "" }))),
      field("fAddress", el("input", { name: "address", maxlength: 200, value: values.address || "" })),
      field("fDescription", el("textarea", { name: "description", rows: 2, maxlength: 4000 })),
      el("div", { class: "actions" }, el("button", { type: "submit", class: "primary", "data-i18n": submitKey, text: t(submitKey) })));
    form.elements.description.value = values.description || "";
    if (values.type) form.elements.type.value = values.type;
  }

  function formBody(form, partial) {
    const f = form.elements;
    const body = { title: f.title.value.trim(), type: f.type.value, level: Number(f.level.value) };
    const lat = f.lat.value.trim(), lon = f.lon.value.trim();
    if (lat !== "" && lon !== "") body.location = { lat: Number(lat), lon: Number(lon) };
    // An empty text clears the field on a PATCH (the API stores "" as nothing).
    const address = f.address.value.trim(), description = f.description.value.trim();
    if (address || partial) body.address = address;
    if (description || partial) body.description = description;
    return body;
  }

  async function createIncident(ev) {
    ev.preventDefault();
    const form = ev.target;
    const made = await act(api("POST", "/api/incidents", formBody(form, false)));
    if (!made) return;
    form.reset();
    $("inc-new").open = false;
    upsert(made);
    await openIncident(made.id, made);
  }

  async function createFromCall(callId) {
    const made = await act(api("POST", "/api/incidents", { call_id: callId }));
    if (!made) return;
    // The call now belongs to it (a waiting caller's queue entry is not re-announced).
    for (const entry of inc.queue) if (entry.queue_id === callId) entry.incident_id = made.id;
    if (state.calls[callId]) state.calls[callId].incident_id = made.id;
    dirty("calls");
    upsert(made);
    showView("incidents-view");
    await openIncident(made.id, made);
    // Taken from a call, the title and type are placeholders: straight to editing them.
    toggleEdit(true);
  }

  function toggleEdit(open) {
    const form = $("inc-edit-form");
    form.hidden = !open;
    dirty("head");
    render();
    if (open && inc.current) {
      buildForm(form, inc.current, "save");
      form.querySelector(".actions").append(el("button", { type: "button", "data-i18n": "cancel", text: t("cancel"),
                                                           onclick: () => toggleEdit(false) }));
      form.elements.title.focus();
    }
  }

  async function saveEdit(ev) {
    ev.preventDefault();
    const cur = inc.current;
    if (!cur) return;
    const body = formBody(ev.target, true);
    // Only what changed: a PATCH of the level re-sizes a running response.
    for (const key of Object.keys(body)) {
      const old = cur[key] ?? (key === "address" || key === "description" ? "" : null);
      if (JSON.stringify(old) === JSON.stringify(body[key])) delete body[key];
    }
    if (!Object.keys(body).length) { toggleEdit(false); return; }
    const detail = await act(api("PATCH", `/api/incidents/${cur.id}`, body));
    if (detail) { applyDetail(detail); toggleEdit(false); }
  }

  // ---- data ---------------------------------------------------------------------------------
  function upsert(item) {
    if (!item || !item.id) return;
    if (item.status === "closed") { delete inc.list[item.id]; dirty("list"); return; }
    const head = {};
    for (const key of ["id", "title", "type", "type_zh", "type_en", "level", "status", "reported_at"])
      if (item[key] !== undefined) head[key] = item[key];
    inc.list[item.id] = { ...(inc.list[item.id] || {}), ...head };
    dirty("list");
  }

  async function loadTypes() {
    const taxonomy = await api("GET", "/api/incident-types", undefined, true).catch(() => null);
    if (!taxonomy) return;
    inc.types = taxonomy.types || [];
    inc.typeByCode = Object.fromEntries(inc.types.map((k) => [k.code, k]));
    buildForm($("inc-new-form"), { level: 4, type: "other" }, "create");
    dirty(...ALL);
    render();
  }

  async function openIncident(id, preloaded) {
    const same = inc.current && inc.current.id === id;
    if (!same) {
      inc.current = null; inc.timeline = []; inc.seen = new Set(); inc.resources = null;
      inc.resourcesError = null; inc.dispatches = null; inc.plans = [];
      inc.mapSel = null; inc.mapPinned = false; inc.endArmed = null; inc.qty = {};
      $("inc-edit-form").hidden = true;
    }
    showView("incidents-view");
    // What the stream says about it while the detail loads is kept, then applied on top.
    inc.opening = { id, events: [] };
    const detail = preloaded && preloaded.timeline ? preloaded
      : await act(api("GET", `/api/incidents/${id}`));
    const opening = inc.opening;
    inc.opening = null;
    if (!detail) return;
    applyDetail(detail);
    if (same) loadPlans();
    if (opening && opening.id === id) for (const ev of opening.events) onEvent(ev);
    dirty(...ALL);
    render();
    $("inc-title").focus({ preventScroll: true });
  }

  // A detail from the API: the header, board, tasks, recordings; new timeline entries appended.
  function applyDetail(detail) {
    const prev = inc.current;
    const moved = !prev || prev.id !== detail.id
      || JSON.stringify(prev.location) !== JSON.stringify(detail.location);
    const retyped = !prev || prev.type !== detail.type;
    const shown = prev && prev.id === detail.id ? prev.response : null;
    inc.current = { ...detail, response: shown };
    delete inc.current.timeline;
    if (detail.response) setResponse(detail.response);
    for (const entry of detail.timeline || []) appendEntry(entry);
    if (detail.status !== "closed") upsert(detail); else upsert({ id: detail.id, status: "closed" });
    dirty("head", "board", "tasks", "recs");
    if (moved) loadResources();
    if (retyped) loadPlans();
    if (detail.dispatches) { inc.dispatches = detail.dispatches; dirty("map"); }
    else loadDispatches();
  }

  // Answers and events can cross: a board replaces the shown one only if it is not older.
  function stamp(response) {
    if (!response) return [0, 0, 0, 0];
    const latest = Math.max(0, ...(response.responders || []).map((r) => r.updated_at || 0));
    return [response.id, response.state === "active" ? 0 : 1, latest, (response.responders || []).length];
  }

  function setResponse(response) {
    const cur = inc.current;
    if (!cur || !response) return;
    const a = stamp(response), b = stamp(cur.response);
    for (let i = 0; i < a.length; i++) {
      if (a[i] > b[i]) break;
      if (a[i] < b[i]) return;
    }
    cur.response = response;
    cur.responders = response.responders || [];
    dirty("board");
  }

  let refreshTimer = null;
  function refreshSoon() {
    // Bursts (a board settling, a plan activating) become one read.
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(async () => {
      const cur = inc.current;
      if (!cur) return;
      const detail = await api("GET", `/api/incidents/${cur.id}`, undefined, true).catch(() => null);
      if (detail && inc.current && inc.current.id === detail.id) { applyDetail(detail); render(); }
    }, 300);
  }

  async function loadPlans() {
    const cur = inc.current;
    if (!cur) return;
    const plans = await api("GET", `/api/plans?incident_type=${encodeURIComponent(cur.type)}`, undefined, true)
      .catch(() => []);
    if (inc.current !== cur && (!inc.current || inc.current.id !== cur.id)) return;
    inc.plans = plans || [];
    dirty("plans");
    render();
  }

  // Reads that overlap (a dispatch, then its timeline line) keep only the latest answer.
  const latest = {};
  async function fresh(key, path) {
    const ticket = (latest[key] = (latest[key] || 0) + 1);
    const cur = inc.current;
    let result, error = null;
    try { result = await api("GET", path, undefined, true); } catch (e) { error = e; }
    const current = ticket === latest[key] && inc.current && cur && inc.current.id === cur.id;
    return current ? { result, error } : null;
  }

  async function loadResources() {
    const cur = inc.current;
    if (!cur) return;
    if (!cur.location) { inc.resources = []; inc.resourcesError = null; dirty("map"); return; }
    const got = await fresh("resources", `/api/resources?near=${cur.id}&limit=10`);
    if (!got) return;
    inc.resources = got.error ? [] : got.result || [];
    inc.resourcesError = got.error;
    dirty("map");
    render();
  }

  async function loadDispatches() {
    const cur = inc.current;
    if (!cur) return;
    const got = await fresh("dispatches", `/api/incidents/${cur.id}/dispatches`);
    if (!got) return;
    inc.dispatches = got.error ? null : got.result.dispatches || [];
    dirty("map");
    render();
  }

  // Entries come from the stream and from re-reads (after a reconnect: older ids than the
  // last one shown); the timeline stays in id order, each entry once.
  function appendEntry(entry) {
    if (inc.seen.has(entry.id)) return;
    inc.seen.add(entry.id);
    inc.timeline.push(entry);
    if (inc.timeline.length > 1 && inc.timeline[inc.timeline.length - 2].id > entry.id)
      inc.timeline.sort((a, b) => a.id - b.id);
    inc.pending = inc.pending || [];
    inc.pending.push(entry);
    dirty("tlAppend");
  }

  // ---- the event stream ---------------------------------------------------------------------
  function onEvent(ev) {
    if (inc.opening && ev.incident_id === inc.opening.id && !(inc.current && inc.current.id === ev.incident_id)) {
      inc.opening.events.push(ev);
      return;
    }
    switch (ev.type) {
      case "snapshot":
        inc.list = {};
        for (const item of ev.incidents || []) upsert(item);
        inc.queue = ev.queue || [];
        dirty("list", "calls");
        // Reconnected: what happened meanwhile is read again.
        if (inc.current) refreshSoon();
        break;
      case "IncidentChanged":
        upsert(ev.incident);
        if (inc.current && ev.incident.id === inc.current.id) {
          const retyped = ev.incident.type !== inc.current.type;
          Object.assign(inc.current, ev.incident);
          dirty("head", "plans");
          if (retyped) loadPlans();
        }
        break;
      case "TimelineAppended":
        if (inc.current && ev.incident_id === inc.current.id) {
          appendEntry(ev.entry);
          if (REFRESH_KINDS.has(ev.entry.kind)) refreshSoon();
          if (ev.entry.kind.startsWith("resource.") || ev.entry.kind === "incident.updated") loadResources();
        }
        break;
      case "ResponseChanged":
        if (inc.current && ev.incident_id === inc.current.id) setResponse(ev.response);
        break;
      case "QueueChanged":
        inc.queue = ev.queue || [];
        dirty("calls");
        break;
      default:
        break;
    }
  }

  // ---- rendering ----------------------------------------------------------------------------
  function render() {
    if (!inc.started) return;
    const calls = Object.values(state.calls).map((c) => `${c.id}:${c.state}:${c.incident_id}`).join();
    if (calls !== inc.callsSeen) { inc.callsSeen = calls; dirty("calls"); }
    if (isDirty("forms")) renderForms();
    if (isDirty("list")) renderList();
    if (isDirty("calls")) renderIncoming();
    $("inc-empty").hidden = !!inc.current;
    $("inc-body").hidden = !inc.current;
    if (!inc.current) { inc.dirty.clear(); return; }
    if (isDirty("head")) renderHead();
    if (isDirty("plans")) renderPlans();
    if (isDirty("board")) renderBoard();
    if (isDirty("tasks")) renderTasks();
    if (isDirty("timeline")) { inc.dirty.delete("tlAppend"); renderTimeline(); }
    else if (isDirty("tlAppend")) appendTimeline();
    if (isDirty("recs")) renderRecordings();
    if (!$("inc-p-map").hidden && !$("incidents-view").hidden && isDirty("map")) renderMap();
  }

  function renderForms() {
    for (const select of document.querySelectorAll("#incidents-view select[name=type]")) fillTypes(select);
    for (const select of document.querySelectorAll("#incidents-view select[name=level]")) fillLevels(select);
  }

  function renderList() {
    const items = Object.values(inc.list).sort((a, b) => b.reported_at - a.reported_at || b.id - a.id);
    $("inc-count").textContent = items.length ? String(items.length) : "";
    const list = $("inc-list");
    list.replaceChildren();
    if (!items.length) list.append(el("li", { class: "muted", text: t("noIncidents") }));
    for (const item of items) {
      const current = inc.current && inc.current.id === item.id;
      list.append(el("li", { "data-incident": item.id, "data-status": item.status,
                             class: `lvl-${item.level}` + (current ? " current" : "") },
        el("button", { type: "button", class: "inc-open", "aria-current": current ? "true" : false,
                       "aria-label": tf("openIncidentLabel", { title: item.title }),
                       onclick: () => openIncident(item.id) },
          el("span", { class: "inc-name", text: item.title }),
          el("span", { class: "inc-meta" },
            el("span", { class: `lvl lvl-${item.level}`, text: levelText(item.level) }),
            el("span", { class: "tag", text: typeText(item.type, item) }),
            el("span", { class: `status st-${item.status}`, text: statusText(item.status) }),
            el("time", { datetime: new Date(item.reported_at * 1000).toISOString(), text: when(item.reported_at) })))));
    }
  }

  // Queued callers and live calls, each with its one-click incident.
  function renderIncoming() {
    const list = $("inc-calls");
    list.replaceChildren();
    const rows = [];
    for (const entry of inc.queue) {
      rows.push({ id: entry.queue_id, who: entry.caller_display || entry.caller,
                  what: `${t("queued")} · ${t(entry.state === "answering" ? "answering" : "waiting")}`,
                  since: entry.since, incident: entry.incident_id });
    }
    const queued = new Set(rows.map((r) => r.id));
    for (const call of Object.values(state.calls)) {
      if (call.state === "ended" || queued.has(call.id) || call.confirm) continue;
      rows.push({ id: call.id, who: (call.legs || []).map((l) => l.target).join(", ") || call.targets.join(", "),
                  what: `${t("activeCall")} ${call.id}`, since: call.created, incident: call.incident_id });
    }
    if (!rows.length) list.append(el("li", { class: "muted", text: t("noIncoming") }));
    const item = (row) => el("li", { "data-call": row.id },
      el("span", { class: "who", text: row.who }),
      el("span", { class: "muted", text: `${row.what} · ${when(row.since)}` }),
      incidentButton(row.id, row.incident));
    for (const row of rows) list.append(item(row));
    // The switchboard shows the waiting callers too (its call cards have their own button).
    const waiting = rows.filter((r) => queued.has(r.id));
    $("sb-queue-box").hidden = !waiting.length;
    $("sb-queue").replaceChildren(...waiting.map(item));
  }

  function incidentButton(callId, incidentId) {
    if (incidentId) {
      return el("button", { type: "button", class: "link", text: tf("openIncident", { id: incidentId }),
                            onclick: () => openIncident(incidentId) });
    }
    return el("button", { type: "button", class: "primary", text: t("createIncident"),
                          "aria-label": tf("createFromCall", { call: callId }),
                          onclick: () => createFromCall(callId) });
  }

  function renderHead() {
    const cur = inc.current;
    $("inc-title").textContent = `#${cur.id} ${cur.title}`;
    $("inc-title").tabIndex = -1;
    $("inc-type").textContent = typeText(cur.type, cur);
    const lvl = $("inc-level");
    lvl.className = `lvl lvl-${cur.level}`;
    lvl.textContent = levelText(cur.level);
    lvl.title = levelLong(cur.level);
    const st = $("inc-status");
    st.className = `status st-${cur.status}`;
    st.textContent = statusText(cur.status);
    const facts = [];
    facts.push(`${t("reported")} ${when(cur.reported_at)}`);
    if (cur.reporter || cur.reporter_phone)
      facts.push(`${t("reporter")} ${[cur.reporter, cur.reporter_phone].filter(Boolean).join(" ")}`);
    if (cur.address) facts.push(cur.address);
    if (cur.location) facts.push(`${cur.location.lat.toFixed(5)}, ${cur.location.lon.toFixed(5)}`);
    if (cur.description) facts.push(cur.description);
    $("inc-facts").textContent = facts.join(" · ");
    $("inc-facts").title = cur.description || "";

    const actions = $("inc-actions");
    actions.replaceChildren();
    const next = { reported: ["verified", "responding", "closed"], verified: ["responding", "closed"],
                   responding: ["closed"], closed: ["reported"] }[cur.status] || [];
    for (const status of next) {
      actions.append(el("button", { type: "button", class: status === "closed" ? "danger" : "",
        "data-status": status, text: t(`to_${status}`),
        onclick: () => patch({ status }) }));
    }
    if (cur.level > 1) {
      actions.append(el("button", { type: "button", text: `▲ ${t("raiseLevel")}`,
        "aria-label": tf("raiseLevelLabel", { level: levelText(cur.level - 1) }),
        onclick: () => patch({ level: cur.level - 1 }) }));
    }
    if (cur.level < 4) {
      actions.append(el("button", { type: "button", text: `▼ ${t("lowerLevel")}`,
        "aria-label": tf("lowerLevelLabel", { level: levelText(cur.level + 1) }),
        onclick: () => patch({ level: cur.level + 1 }) }));
    }
    actions.append(
      el("button", { type: "button", text: t("edit"), "aria-expanded": String(!$("inc-edit-form").hidden),
                     "aria-controls": "inc-edit-form", onclick: () => toggleEdit($("inc-edit-form").hidden) }),
      el("a", { class: "button", href: `/api/incidents/${cur.id}/evidence`, download: "",
                text: `⤓ ${t("downloadEvidence")}` }));
    $("inc-evidence").href = `/api/incidents/${cur.id}/evidence`;
  }

  async function patch(body) {
    const cur = inc.current;
    const detail = await act(api("PATCH", `/api/incidents/${cur.id}`, body));
    if (detail) { applyDetail(detail); render(); }
  }

  function renderPlans() {
    const select = $("inc-plan");
    const keep = select.value;
    // Rebuilt only when the plans or the language changed (it may be open in the dispatcher's hand).
    const sig = `${state.lang}|${inc.plans.map((p) => `${p.id}:${p.name}:${p.level}`).join()}`;
    if (sig !== select.dataset.sig) {
      select.dataset.sig = sig;
      select.replaceChildren();
      for (const plan of inc.plans) {
        select.append(el("option", { value: String(plan.id), text: `${plan.name} (${levelText(plan.level)})` }));
      }
      if (!inc.plans.length) select.append(el("option", { value: "", text: t("noPlans") }));
      if (keep && inc.plans.some((p) => String(p.id) === keep)) select.value = keep;
    }
    const level = $("inc-act-level");
    if (!level.options.length) for (let n = 1; n <= 4; n++) level.append(el("option", { value: String(n) }));
    fillLevels(level);
    level.value = String(inc.current.level);
    $("inc-activate-btn").disabled = !inc.plans.length;
  }

  async function activate(ev) {
    ev.preventDefault();
    const cur = inc.current;
    const planId = Number($("inc-plan").value);
    if (!planId) return;
    const response = await act(api("POST", `/api/incidents/${cur.id}/activate`,
                                    { plan_id: planId, level: Number($("inc-act-level").value) }));
    if (response && inc.current && inc.current.id === cur.id) {
      setResponse(response);
      render();
      refreshSoon();
    }
  }

  function renderBoard() {
    const cur = inc.current;
    const response = cur.response;
    const running = response && response.state === "active";
    $("inc-activate").hidden = running;
    const summary = $("inc-response");
    summary.replaceChildren();
    const rows = $("inc-board-rows");
    rows.replaceChildren();
    $("inc-board").hidden = !response;
    if (!response) {
      summary.append(el("p", { class: "muted", text: t("noResponse") }));
      return;
    }
    summary.append(el("p", { class: "resp-line", "data-response-state": response.state,
      text: tf("responseSummary", { plan: response.plan_name, level: levelText(response.level),
                                    state: t(`resp_${response.state}`), time: clock(response.started_at) }) }));
    const counts = el("p", { class: "counts" });
    for (const [s, n] of Object.entries(response.counts || {})) {
      if (n) counts.append(el("span", { class: `badge rs-${s}`, "data-count-state": s, text: `${stateText(s)} ${n}` }));
    }
    summary.append(counts);
    if (running) {
      const armed = inc.endArmed === cur.id;
      summary.append(el("button", { type: "button", class: "danger",
        text: armed ? t("confirmEnd") : t("endResponse"),
        onclick: () => endResponse(cur.id) }));
    }
    const byId = Object.fromEntries((response.responders || []).map((r) => [r.id, r]));
    for (const r of response.responders || []) {
      const of = r.deputy_for ? byId[r.deputy_for] : null;
      const person = el("td", {}, el("span", { text: r.person }));
      if (r.deputy_for)
        person.append(" ", el("span", { class: "deputy", text: tf("deputyFor", { person: of ? of.person : `#${r.deputy_for}` }) }));
      rows.append(el("tr", { "data-person": r.person, "data-state": r.state, class: r.deputy_for ? "deputy-row" : "" },
        el("td", { text: r.role }), person,
        el("td", {}, el("span", { class: `badge rs-${r.state}`, text: stateText(r.state) })),
        el("td", { text: r.endpoint || "—" }),
        el("td", { class: "num", text: String(r.attempts || 0) })));
    }
  }

  async function endResponse(id) {
    // Two clicks, no dialog: ending calls everyone off, so it is asked twice.
    if (inc.endArmed !== id) {
      inc.endArmed = id;
      dirty("board"); render();
      setTimeout(() => { if (inc.endArmed === id) { inc.endArmed = null; dirty("board"); render(); } }, 4000);
      return;
    }
    inc.endArmed = null;
    const response = await act(api("POST", `/api/incidents/${id}/response/end`));
    if (response && inc.current && inc.current.id === id) {
      setResponse(response);
      render();
      refreshSoon();
    }
  }

  function renderTasks() {
    const list = $("inc-tasks");
    list.replaceChildren();
    const tasks = inc.current.tasks || [];
    if (!tasks.length) list.append(el("li", { class: "muted", text: t("noTasks") }));
    for (const task of tasks) {
      const box = el("input", { type: "checkbox", checked: task.state === "done", "aria-label": task.title });
      box.addEventListener("change", async () => {
        const done = await act(api("PATCH", `/api/incidents/${inc.current.id}/tasks/${task.id}`, { done: box.checked }));
        if (done) Object.assign(task, done); else box.checked = !box.checked;
        dirty("tasks"); render();
      });
      list.append(el("li", { "data-task": task.id, "data-state": task.state, class: task.overdue ? "overdue" : "" },
        el("label", {}, box, " ", el("span", { text: task.title })),
        task.role ? el("span", { class: "tag", text: task.role }) : "",
        task.due_at ? el("span", { class: "muted", text: task.overdue ? t("taskOverdue") : tf("taskDue", { time: when(task.due_at) }) }) : ""));
    }
  }

  // One timeline entry as a line: who did it, and what happened, in the page's language.
  function describe(entry) {
    const d = entry.data || {};
    const lvl = (n) => (typeof n === "number" ? levelText(n) : String(n ?? ""));
    const kindName = (k) => (k ? t(`kind_${k}`) : "");
    switch (entry.kind) {
      case "incident.created":
        return tf("tl_created", { title: d.title, type: typeText(d.type), level: lvl(d.level) });
      case "incident.status":
        return tf("tl_status", { old: statusText(d.old), new: statusText(d.new) });
      case "incident.level":
        return tf("tl_level", { old: lvl(d.old), new: lvl(d.new) });
      case "incident.updated":
        return tf("tl_updated", { fields: Object.keys(d).map((k) => t(`field_${k}`)).join(zh() ? "、" : ", ") });
      case "call.attached":
        return tf("tl_callAttached", { call: d.call_id, caller: d.caller || "—" });
      case "recording.attached":
        return tf("tl_recording", { id: d.recording_id });
      case "call.placed":
        return tf("tl_callPlaced", { call: d.call_id, targets: people(d.targets) || "—" });
      case "call.ended":
        return tf("tl_callEnded", { call: d.call_id, reason: d.reason || "" });
      case "call.leg": {
        let what = d.state === "ended" && d.outcome && d.outcome !== "answered" ? t(d.outcome) : t(`leg_${d.state}`);
        if (d.confirmed) what = t("tl_legConfirmed");
        return tf("tl_leg", { target: d.target, what, call: d.call_id });
      }
      case "message":
        return tf("tl_message", { text: d.text });
      case "response.activated":
        return tf("tl_activated", { plan: d.plan_name, level: lvl(d.level), n: (d.responders || []).length });
      case "response.interrupted":
        return tf("tl_interrupted", { reason: d.reason });
      case "responder.state": {
        const of = d.deputy_for ? responderName(d.deputy_for) : null;
        return tf(of ? "tl_responderDeputy" : "tl_responder",
                  { person: d.person, role: d.role, of, state: stateText(d.new) });
      }
      case "responder.escalated":
        return tf(d.deputy_called ? "tl_escalated" : "tl_escalatedNoDeputy",
                  { person: d.person, role: d.role, deputy: d.deputy });
      case "notification.sent":
        return tf("tl_notice", { person: d.person, reason: t(`reason_${d.reason}`), text: d.text });
      case "notification.failed":
        return tf("tl_noticeFailed", { person: d.person, reason: t(`reason_${d.reason}`), error: d.error });
      case "response.level": {
        let more = "";
        if ((d.mobilised || []).length) more += tf("tl_mobilised", { people: people(d.mobilised) });
        if ((d.stood_down || []).length) more += tf("tl_stoodDown", { people: people(d.stood_down) });
        return tf("tl_responseLevel", { old: lvl(d.old), new: lvl(d.new), more });
      }
      case "response.ended":
        return tf("tl_ended", { plan: d.plan_name, reason: d.reason || "" });
      case "task.done": return tf("tl_taskDone", { title: d.title });
      case "task.reopened": return tf("tl_taskReopened", { title: d.title });
      case "evidence.exported": return tf("tl_evidence", { file: d.file });
      case "action":
        return tf("tl_action", { action: I18N.en[`act_${d.action}`] ? t(`act_${d.action}`) : d.action,
                                 target: d.target || "",
                                 result: d.result && d.result !== "ok" ? tf("tl_actionFailed", { result: d.result }) : "" });
      case "resource.dispatched":
        return tf("tl_dispatched", { kind: kindName(d.kind), name: d.name,
          qty: d.quantity ? ` ×${d.quantity}${d.unit ? " " + d.unit : ""}` : "",
          dist: d.distance_m !== undefined && d.distance_m !== null ? ` (${km(d.distance_m)})` : "" });
      case "resource.released":
        return tf("tl_released", { kind: kindName(d.kind), name: d.name, qty: d.quantity ? ` ×${d.quantity}` : "" });
      case "resource.contact_called":
        return tf("tl_contactCalled", { kind: kindName(d.kind), name: d.name, contact: d.contact, phone: d.phone });
      default:
        return `${entry.kind} ${JSON.stringify(d)}`;
    }
  }

  function responderName(id) {
    const response = inc.current && inc.current.response;
    const found = response && (response.responders || []).find((r) => r.id === id);
    if (found) return found.person;
    const entry = inc.timeline.find((e) => e.kind === "responder.state" && e.data.responder_id === id);
    return entry ? entry.data.person : `#${id}`;
  }

  function entryRow(entry) {
    const quiet = entry.kind === "call.leg" || entry.kind === "recording.attached";
    // A notice's channel (sms, or log when no sender is configured) is in the tooltip.
    const channel = entry.kind.startsWith("notification.") && entry.data ? entry.data.channel : null;
    return el("li", { "data-kind": entry.kind, "data-entry": entry.id, class: quiet ? "quiet" : "",
                      title: channel ? `${entry.kind} · ${channel}` : entry.kind },
      el("time", { datetime: new Date(entry.at * 1000).toISOString(), text: clock(entry.at) }),
      el("span", { class: "actor", text: entry.actor || t("system") }),
      el("span", { class: "what", text: describe(entry) }));
  }

  function renderTimeline() {
    const list = $("inc-tl");
    list.replaceChildren(...inc.timeline.map(entryRow));
    inc.pending = [];
    list.scrollTop = list.scrollHeight;
  }

  function appendTimeline() {
    const list = $("inc-tl");
    const atEnd = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    const sorted = inc.pending || [];
    inc.pending = [];
    const last = list.lastElementChild;
    if (sorted.some((e) => last && Number(last.dataset.entry) > e.id)) { renderTimeline(); return; }
    for (const entry of sorted) list.append(entryRow(entry));
    if (atEnd) list.scrollTop = list.scrollHeight;
  }

  function renderRecordings() {
    const list = $("inc-recs");
    list.replaceChildren();
    const recs = inc.current.recordings || [];
    if (!recs.length) list.append(el("li", { class: "muted", text: t("noRecordings") }));
    for (const rec of recs) {
      // Same origin: the audio request carries the session cookie.
      list.append(el("li", { "data-recording": rec.recording_id },
        el("span", { text: tf("recordingOf", { id: rec.recording_id, call: rec.call_id || "—", time: when(rec.started_at) }) }),
        el("audio", { controls: true, preload: "none", src: `/api/recordings/${encodeURIComponent(rec.recording_id)}/audio`,
                      "aria-label": tf("playRecording", { id: rec.recording_id }) })));
    }
  }

  // ---- the map: no tiles, no network; a graticule, the incident, the nearest resources ----
  function niceStep(span, lines) {
    const raw = span / lines;
    const pow = 10 ** Math.floor(Math.log10(raw));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * pow >= raw) return m * pow;
    return 10 * pow;
  }

  function decimals(step) {
    let n = 0;
    while (n < 8 && Math.abs(Math.round(step * 10 ** n) - step * 10 ** n) > 1e-9) n++;
    return n;
  }

  function geometry(canvas) {
    const cur = inc.current;
    const lat0 = cur.location.lat, lon0 = cur.location.lon;
    const kx = KM_PER_DEG * Math.cos(lat0 * Math.PI / 180), ky = KM_PER_DEG;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    let reach = 0.5;  // km: at least a kilometre across
    for (const r of inc.resources || []) {
      if (!r.location) continue;
      reach = Math.max(reach, Math.abs((r.location.lon - lon0) * kx), Math.abs((r.location.lat - lat0) * ky));
    }
    const perKm = Math.min(w / 2 - 34, h / 2 - 26) / (reach * 1.12);
    const x = (lon) => w / 2 + (lon - lon0) * kx * perKm;
    const y = (lat) => h / 2 - (lat - lat0) * ky * perKm;
    return { lat0, lon0, kx, ky, w, h, perKm, x, y,
             lon: (px) => lon0 + (px - w / 2) / (kx * perKm), lat: (py) => lat0 - (py - h / 2) / (ky * perKm) };
  }

  function drawSymbol(ctx, shape, x, y, size, color) {
    ctx.beginPath();
    const s = size;
    if (shape === "triangle") { ctx.moveTo(x, y - s); ctx.lineTo(x + s, y + s * 0.8); ctx.lineTo(x - s, y + s * 0.8); }
    else if (shape === "down") { ctx.moveTo(x, y + s); ctx.lineTo(x + s, y - s * 0.8); ctx.lineTo(x - s, y - s * 0.8); }
    else if (shape === "square") ctx.rect(x - s * 0.8, y - s * 0.8, s * 1.6, s * 1.6);
    else if (shape === "diamond") { ctx.moveTo(x, y - s); ctx.lineTo(x + s, y); ctx.lineTo(x, y + s); ctx.lineTo(x - s, y); }
    else if (shape === "house") {
      ctx.moveTo(x, y - s); ctx.lineTo(x + s, y - s * 0.1); ctx.lineTo(x + s * 0.75, y - s * 0.1);
      ctx.lineTo(x + s * 0.75, y + s * 0.85); ctx.lineTo(x - s * 0.75, y + s * 0.85);
      ctx.lineTo(x - s * 0.75, y - s * 0.1); ctx.lineTo(x - s, y - s * 0.1);
    } else ctx.arc(x, y, s * 0.9, 0, 2 * Math.PI);
    ctx.closePath();
    ctx.fillStyle = color;
    ctx.fill();
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = "#0b1220";
    ctx.stroke();
  }

  function drawIncident(ctx, x, y) {
    ctx.lineWidth = 2;
    ctx.strokeStyle = "#fff";
    ctx.fillStyle = "#e11d48";
    ctx.beginPath(); ctx.arc(x, y, 9, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
    ctx.beginPath(); ctx.arc(x, y, 3, 0, 2 * Math.PI); ctx.fillStyle = "#fff"; ctx.fill();
    ctx.beginPath();
    for (const [dx, dy] of [[0, -1], [0, 1], [-1, 0], [1, 0]]) { ctx.moveTo(x + dx * 12, y + dy * 12); ctx.lineTo(x + dx * 17, y + dy * 17); }
    ctx.strokeStyle = "#e11d48"; ctx.stroke();
  }

  function renderMap() {
    renderResourceList();
    renderDispatches();
    drawMap();
  }

  function drawMap() {
    const canvas = $("inc-map");
    const cur = inc.current;
    const ctx = canvas.getContext("2d");
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (!w || !h) return;
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#0b1220";
    ctx.fillRect(0, 0, w, h);
    ctx.font = "11px system-ui, sans-serif";
    inc.markers = [];
    for (const li of $("inc-res").children) li.classList.toggle("selected", Number(li.dataset.resource) === inc.mapSel);
    if (!cur.location) {
      canvas.setAttribute("aria-label", t("noLocation"));
      ctx.fillStyle = "#94a3b8";
      ctx.textAlign = "center";
      ctx.fillText(t("noLocation"), w / 2, h / 2);
      ctx.textAlign = "start";
      hidePopup();
      return;
    }
    const g = geometry(canvas);
    // Graticule: a nice step in degrees for each axis, about five lines across.
    const south = g.lat(h), north = g.lat(0), west = g.lon(0), east = g.lon(w);
    const latStep = niceStep(north - south, 5), lonStep = niceStep(east - west, 6);
    ctx.strokeStyle = "#1e293b";
    ctx.lineWidth = 1;
    ctx.fillStyle = "#64748b";
    const latDigits = decimals(latStep), lonDigits = decimals(lonStep);
    for (let lat = Math.ceil(south / latStep) * latStep; lat <= north; lat += latStep) {
      const py = Math.round(g.y(lat)) + 0.5;
      ctx.beginPath(); ctx.moveTo(0, py); ctx.lineTo(w, py); ctx.stroke();
      // No label under the longitudes (top) or the scale bar (bottom).
      if (py > 22 && py < h - 34) ctx.fillText(`${Math.abs(lat).toFixed(latDigits)}°${lat >= 0 ? "N" : "S"}`, 3, py - 3);
    }
    for (let lon = Math.ceil(west / lonStep) * lonStep; lon <= east; lon += lonStep) {
      const px = Math.round(g.x(lon)) + 0.5;
      ctx.beginPath(); ctx.moveTo(px, 0); ctx.lineTo(px, h); ctx.stroke();
      ctx.fillText(`${Math.abs(lon).toFixed(lonDigits)}°${lon >= 0 ? "E" : "W"}`, px + 3, 12);
    }
    // Range rings at the scale bar's length help judge distance at a glance.
    const barKm = niceStep(w / g.perKm / 5, 1);
    ctx.setLineDash([3, 4]);
    ctx.strokeStyle = "#334155";
    for (let ring = 1; ring <= 3; ring++) {
      ctx.beginPath(); ctx.arc(w / 2, h / 2, ring * barKm * g.perKm, 0, 2 * Math.PI); ctx.stroke();
    }
    ctx.setLineDash([]);

    // Resources, then the incident on top.
    const placed = [];
    (inc.resources || []).forEach((r, i) => {
      if (!r.location) return;
      const x = g.x(r.location.lon), y = g.y(r.location.lat);
      const sym = SYMBOL[r.kind] || { shape: "circle", color: "#e5e7eb" };
      const selected = inc.mapSel === r.id;
      ctx.globalAlpha = r.status === "unavailable" ? 0.45 : 1;
      if (selected) { ctx.beginPath(); ctx.arc(x, y, 14, 0, 2 * Math.PI); ctx.strokeStyle = "#facc15"; ctx.lineWidth = 2; ctx.stroke(); }
      drawSymbol(ctx, sym.shape, x, y, 8, sym.color);
      if (r.status === "dispatched") { ctx.beginPath(); ctx.arc(x, y, 11, 0, 2 * Math.PI); ctx.strokeStyle = "#f8fafc"; ctx.lineWidth = 1; ctx.stroke(); }
      ctx.globalAlpha = 1;
      // Labels: the list number and name, nudged down when another label is in the way.
      let ly = y + 4;
      while (placed.some((p) => Math.abs(p.x - x) < 90 && Math.abs(p.y - ly) < 12)) ly += 12;
      placed.push({ x, y: ly });
      const label = `${i + 1} ${r.name.length > 14 ? r.name.slice(0, 13) + "…" : r.name}`;
      ctx.lineWidth = 3; ctx.strokeStyle = "#0b1220"; ctx.strokeText(label, x + 12, ly);
      ctx.fillStyle = "#e5e7eb"; ctx.fillText(label, x + 12, ly);
      inc.markers.push({ x, y, resource: r });
    });
    drawIncident(ctx, w / 2, h / 2);

    // Scale bar (bottom left).
    const barPx = barKm * g.perKm;
    ctx.fillStyle = "rgba(2, 6, 23, 0.8)";
    ctx.fillRect(6, h - 30, barPx + 60, 24);
    ctx.strokeStyle = "#e5e7eb"; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.moveTo(12, h - 14); ctx.lineTo(12, h - 10); ctx.lineTo(12 + barPx, h - 10); ctx.lineTo(12 + barPx, h - 14); ctx.stroke();
    ctx.fillStyle = "#e5e7eb";
    const scale = barKm >= 1 ? `${barKm} km` : `${Math.round(barKm * 1000)} m`;
    ctx.fillText(scale, 18 + barPx, h - 10);

    // Legend (bottom right): the incident and the kinds on the map.
    const kinds = KINDS.filter((k) => (inc.resources || []).some((r) => r.kind === k && r.location));
    const rows = [["incident", t("incidentSite")], ...kinds.map((k) => [k, kindText(k)])];
    const lw = 24 + Math.max(...rows.map(([, text]) => ctx.measureText(text).width));
    const lh = rows.length * 16 + 8;
    ctx.fillStyle = "rgba(2, 6, 23, 0.8)";
    ctx.fillRect(w - lw - 10, h - lh - 6, lw + 4, lh);
    rows.forEach(([k, text], i) => {
      const yy = h - lh + 6 + i * 16;
      if (k === "incident") {
        ctx.beginPath(); ctx.arc(w - lw, yy, 5, 0, 2 * Math.PI); ctx.fillStyle = "#e11d48"; ctx.fill();
      } else drawSymbol(ctx, SYMBOL[k].shape, w - lw, yy, 5, SYMBOL[k].color);
      ctx.fillStyle = "#e5e7eb";
      ctx.fillText(text, w - lw + 10, yy + 4);
    });
    const n = (inc.resources || []).filter((r) => r.location).length;
    canvas.setAttribute("aria-label", tf("mapLabel", { title: cur.title, n, scale }));
    // The card follows the selection: pinned by a click or a key, or under the mouse.
    if (inc.mapSel && (inc.mapPinned || inc.mapHover)) showPopup(inc.mapSel, inc.mapPinned);
    else hidePopup();
  }

  function resourceFacts(r) {
    const parts = [kindText(r.kind), km(r.distance_m), t(`res_${r.status}`)];
    if (STOCK.has(r.kind) && r.quantity !== undefined) parts.push(tf("inStock", { n: `${r.quantity}${r.unit ? " " + r.unit : ""}` }));
    return parts.join(" · ");
  }

  // Call and Dispatch for one resource (the list and the map's popup share them).
  function resourceActions(r) {
    const box = el("span", { class: "actions" });
    const contact = (r.contacts || [])[0];
    box.append(el("button", { type: "button", text: `☎ ${t("callRes")}`, "aria-label": tf("callResLabel", { name: r.name }),
      title: contact ? `${contact.name} ${contact.phone}` : t("noContact"), disabled: !contact,
      onclick: () => act(api("POST", `/api/resources/${r.id}/call`, { contact: 0, incident_id: inc.current.id })) }));
    let qty = null;
    if (STOCK.has(r.kind)) {
      qty = el("input", { type: "number", min: 1, max: r.quantity || 1, value: inc.qty[r.id] || 1,
                          class: "qty", "aria-label": tf("quantityOf", { name: r.name }) });
      qty.addEventListener("input", () => { inc.qty[r.id] = qty.value; });
      box.append(qty);
    }
    box.append(el("button", { type: "button", class: "primary", text: t("dispatchRes"),
      "aria-label": tf("dispatchResLabel", { name: r.name }),
      disabled: r.status !== "available" || (STOCK.has(r.kind) && !r.quantity),
      onclick: async () => {
        const body = { resource_id: r.id };
        if (qty) body.quantity = Number(qty.value) || 1;
        const done = await act(api("POST", `/api/incidents/${inc.current.id}/dispatches`, body));
        if (done) { delete inc.qty[r.id]; loadResources(); loadDispatches(); }
      } }));
    return box;
  }

  function renderResourceList() {
    const list = $("inc-res");
    // Rebuilt only when something shown changed, keeping the focus where it was.
    const sig = JSON.stringify([state.lang, inc.current.id, !!inc.current.location, String(inc.resourcesError),
                                inc.resources]);
    if (sig === list.dataset.sig) return;
    list.dataset.sig = sig;
    const focused = list.contains(document.activeElement) ? focusKey(document.activeElement) : null;
    list.replaceChildren();
    if (!inc.current.location) return;
    if (inc.resourcesError) { list.append(el("li", { class: "muted", text: t("resourcesUnavailable") })); return; }
    if (inc.resources && !inc.resources.length) list.append(el("li", { class: "muted", text: t("noResources") }));
    for (const r of inc.resources || []) {
      const sym = SYMBOL[r.kind] || { color: "#e5e7eb" };
      const li = el("li", { "data-resource": r.id, "data-kind": r.kind, "data-distance": r.distance_m ?? "",
                            class: inc.mapSel === r.id ? "selected" : "" },
        el("span", { class: "sym", style: `color:${sym.color}`, "aria-hidden": "true", text: "●" }),
        el("span", { class: "res-name", text: r.name }),
        el("span", { class: "muted", text: resourceFacts(r) }),
        resourceActions(r));
      // Pointing at a row rings its marker; the map's card closes (the row has the buttons).
      const point = () => { inc.mapSel = r.id; inc.mapPinned = false; inc.mapHover = false; drawOnly(); };
      li.addEventListener("mouseenter", point);
      li.addEventListener("focusin", point);
      list.append(li);
    }
    if (focused) {
      const again = [...list.querySelectorAll("button, input")].find((node) => focusKey(node) === focused);
      if (again) again.focus();
    }
  }

  function focusKey(node) {
    const row = node.closest("[data-resource]");
    return row ? `${row.dataset.resource}:${node.tagName}:${node.getAttribute("aria-label")}` : null;
  }

  function renderDispatches() {
    const list = $("inc-disp");
    list.replaceChildren();
    if (inc.dispatches === null) { list.append(el("li", { class: "muted", text: t("resourcesUnavailable") })); return; }
    if (!inc.dispatches.length) list.append(el("li", { class: "muted", text: t("noDispatched") }));
    for (const d of inc.dispatches) {
      const li = el("li", { "data-dispatch": d.id, "data-state": d.state },
        el("span", { text: `${kindText(d.kind)} · ${d.name}${d.quantity ? ` ×${d.quantity}${d.unit ? " " + d.unit : ""}` : ""}` }),
        el("span", { class: "muted", text: `${t(`disp_${d.state}`)} · ${when(d.dispatched_at)}${d.distance_m != null ? " · " + km(d.distance_m) : ""}` }));
      if (d.state === "active") {
        li.append(el("button", { type: "button", text: t("release"), "aria-label": tf("releaseLabel", { name: d.name }),
          onclick: async () => {
            const done = await act(api("POST", `/api/incidents/${inc.current.id}/dispatches/${d.id}/release`));
            if (done) { loadResources(); loadDispatches(); }
          } }));
      }
      list.append(li);
    }
  }

  // Redraw the canvas (a selection moved) without rebuilding the lists.
  let drawFrame = null;
  function drawOnly() {
    if (drawFrame) return;
    drawFrame = requestAnimationFrame(() => {
      drawFrame = null;
      if (!inc.current || $("inc-p-map").hidden) return;
      drawMap();
    });
  }

  function markerAt(x, y) {
    let best = null, bestD = 14;
    for (const m of inc.markers) {
      const d = Math.hypot(m.x - x, m.y - y);
      if (d < bestD) { best = m; bestD = d; }
    }
    return best;
  }

  function showPopup(resourceId, pinned) {
    const marker = inc.markers.find((m) => m.resource.id === resourceId);
    const pop = $("inc-map-pop");
    if (!marker) { hidePopup(); return; }
    const r = marker.resource;
    const focused = pop.contains(document.activeElement) ? document.activeElement.getAttribute("aria-label") : null;
    pop.replaceChildren(
      el("strong", { id: "inc-map-pop-name", text: r.name }),
      el("div", { class: "muted", text: resourceFacts(r) }),
      r.address ? el("div", { class: "muted", text: r.address }) : "",
      resourceActions(r),
      pinned ? el("button", { type: "button", class: "pop-close", "aria-label": t("close"), text: "×",
                              onclick: () => { inc.mapPinned = false; hidePopup(); $("inc-map").focus(); } }) : "");
    pop.hidden = false;
    if (focused) for (const node of pop.querySelectorAll("button, input"))
      if (node.getAttribute("aria-label") === focused) node.focus();
    const canvas = $("inc-map");
    const left = Math.min(marker.x + 14, canvas.clientWidth - pop.offsetWidth - 4);
    const top = marker.y + 14 + pop.offsetHeight > canvas.clientHeight ? marker.y - pop.offsetHeight - 14 : marker.y + 14;
    pop.style.left = `${Math.max(4, left)}px`;
    pop.style.top = `${Math.max(4, top)}px`;
  }

  function hidePopup() {
    const pop = $("inc-map-pop");
    if (pop) pop.hidden = true;
  }

  function mapEvents() {
    const canvas = $("inc-map");
    const pos = (ev) => { const b = canvas.getBoundingClientRect(); return [ev.clientX - b.left, ev.clientY - b.top]; };
    canvas.addEventListener("mousemove", (ev) => {
      if (inc.mapPinned) return;
      const m = markerAt(...pos(ev));
      canvas.style.cursor = m ? "pointer" : "default";
      const id = m ? m.resource.id : null;
      inc.mapHover = !!m;
      if (id !== inc.mapSel) { inc.mapSel = id; drawOnly(); }
      if (m) showPopup(id, false); else hidePopup();
    });
    canvas.addEventListener("mouseleave", (ev) => {
      inc.mapHover = false;
      if (!inc.mapPinned && !$("inc-map-pop").contains(ev.relatedTarget)) hidePopup();
    });
    canvas.addEventListener("click", (ev) => {
      const m = markerAt(...pos(ev));
      inc.mapPinned = !!m;
      inc.mapSel = m ? m.resource.id : null;
      drawOnly();
      if (m) showPopup(m.resource.id, true); else hidePopup();
    });
    // Keyboard: arrows step through the resources nearest first; Escape closes the card.
    canvas.addEventListener("keydown", (ev) => {
      const ids = inc.markers.map((m) => m.resource.id);
      if (!ids.length) return;
      // From the open card's marker on; with no card open, from the nearest.
      const i = inc.mapPinned ? ids.indexOf(inc.mapSel) : -1;
      let next = null;
      if (ev.key === "ArrowRight" || ev.key === "ArrowDown") next = ids[(i + 1) % ids.length];
      else if (ev.key === "ArrowLeft" || ev.key === "ArrowUp") next = ids[(i + ids.length - 1) % ids.length];
      else if (ev.key === "Escape") { inc.mapPinned = false; inc.mapSel = null; hidePopup(); drawOnly(); return; }
      if (next === null) return;
      ev.preventDefault();
      inc.mapSel = next; inc.mapPinned = true;
      drawOnly();  // the redraw opens the card of the pinned marker
    });
    new ResizeObserver(() => { if (!$("inc-p-map").hidden) { dirty("map"); render(); } }).observe(canvas);
  }

  // ---- plugging into the page ---------------------------------------------------------------
  function setup() {
    $("views").addEventListener("click", (ev) => {
      const tab = ev.target.closest("[role=tab]");
      if (tab) showView(tab.dataset.view);
    });
    tabKeys($("views"), (tab) => showView(tab.dataset.view));
    document.querySelector(".subtabs").addEventListener("click", (ev) => {
      const tab = ev.target.closest("[role=tab]");
      if (tab) showPanel(tab.dataset.panel);
    });
    tabKeys(document.querySelector(".subtabs"), (tab) => showPanel(tab.dataset.panel));
    $("inc-new-form").addEventListener("submit", createIncident);
    $("inc-edit-form").addEventListener("submit", saveEdit);
    $("inc-activate").addEventListener("submit", activate);
    // Plans have no events: the list is read again whenever the dispatcher goes to pick one.
    $("inc-plan").addEventListener("focus", loadPlans);
    $("inc-msg-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const box = $("inc-msg");
      const text = box.value.trim();
      if (!text || !inc.current) return;
      const entry = await act(api("POST", `/api/incidents/${inc.current.id}/messages`, { text }));
      if (entry) { box.value = ""; appendEntry(entry); render(); }
    });
    $("inc-msg").addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); $("inc-msg-form").requestSubmit(); }
    });
    mapEvents();
  }

  features.push({
    onStart() {
      inc.started = true;
      $("views").hidden = false;
      showView(inc.view);
      dirty(...ALL);
      if (!inc.types.length) loadTypes();
    },
    onStop() {
      inc.started = false;
      $("views").hidden = true;
      $("incidents-view").hidden = true;
      inc.current = null;
    },
    onLanguage() { dirty(...ALL); },
    onEvent,
    render,
    callTools(call) {
      if (call.state === "ended" || call.confirm) return [];
      return [incidentButton(call.id, call.incident_id)];
    },
  });

  document.addEventListener("DOMContentLoaded", setup);
  // For tests and the console: the incident state, read-only by convention.
  window.incidents = inc;
})();
