/* VitalWatch live layer: one WebSocket (/ws/live) per tab feeds tiles, alarm and reminder
   lists, trends, sound and the NOT MONITORING banner. Elements are found by data attributes
   (data-vw-room / data-vw-part / data-vw-metric, data-vw-alerts, data-vw-reminders,
   data-vw-trend), so any page that renders them gets live values; the overview's tiles are
   built by tiles.js from the same state. Messages only change the state and mark what is
   dirty; values are written right after the socket message (a microtask: one pass per server
   frame), the rest by one requestAnimationFrame flush (single text nodes and attributes, only
   where the text changed), so 100 rooms at 1 Hz cost a few writes per frame. On an overview
   of many rooms (VW.frameBudget.minRooms) the frames that write readings are also limited to
   VW.frameBudget.perSecond: past that, readings wait for the next allowed frame (see "frame
   budget" below); alarm state is never held back.
   No inline scripts, no eval: everything is wired here with addEventListener. */
(function () {
  "use strict";
  if (window.VW) { return; }
  var VW = window.VW = {
    rooms: {}, clinic: [], mon: {ok: false, reasons: ["connecting"], everywhere: ["connecting"]}, user: null,
    cfg: {stale_s: 5, nibp_cycle_s: {}, rooms: {}, order: [], undo_s: 10},
    ws: null, connected: false, lastMsgMs: 0, received: 0, serverSkewMs: 0,
    audio: {ctx: null, muted: false, playing: null, lastPlayMs: {}, plays: 0, log: []},
    trendQueue: {}, sparkDirty: {}, idx: null, hooks: [], frames: 0
  };
  var LOST_AFTER_MS = 3000;            // no message (the server sends one every second) = connection lost
  var TREND_TRACES = ["hr", "spo2", "sbp", "dbp", "map", "rr"];
  var TREND_MAX_POINTS = 3000;
  var NIBP = {sbp: 1, dbp: 1, map: 1};
  var PRIO = {high: 0, medium: 1, low: 2};
  var PRIO_WORD = {high: "HIGH", medium: "MEDIUM", low: "LOW"};
  var SHORT = {hr: "HR", spo2: "SpO2", sbp: "SBP", dbp: "DBP", map: "MAP", rr: "RR", temp: "Temp", pi: "PI"};
  var UNIT = {hr: "/min", spo2: "%", sbp: "mmHg", dbp: "mmHg", map: "mmHg", rr: "/min", temp: "°C", pi: "%"};
  // Alarm sound per priority (IEC 60601-1-8 style: more pulses, higher pitch, shorter repeat
  // for higher priority). Reminders never sound.
  var SOUND = {
    high: {hz: 960, pulses: [0, 0.18, 0.36, 0.72, 0.9], len: 0.13, every_ms: 3000},
    medium: {hz: 700, pulses: [0, 0.25, 0.5], len: 0.18, every_ms: 8000},
    low: {hz: 500, pulses: [0, 0.35], len: 0.2, every_ms: 20000}
  };
  VW.sound = SOUND;
  var SOUND_OFF_TEXT = "Sound off — click to enable alarm sound";
  var SOUND_ON_TEXT = "Alarm sound on";

  function now() { return Date.now(); }
  function setText(el, text) {
    var n = el.firstChild;
    if (n && n.nodeType === 3 && !n.nextSibling) { if (n.nodeValue !== text) { n.nodeValue = text; } }
    else if (el.textContent !== text) { el.textContent = text; }
  }
  function setAttr(el, name, value) {
    if (value === null) { if (el.hasAttribute(name)) { el.removeAttribute(name); } }
    else if (el.getAttribute(name) !== value) { el.setAttribute(name, value); }
  }
  function num(v) {
    var f = Number(v);
    if (!isFinite(f)) { return String(v); }
    f = Math.round(f * 10) / 10;
    return String(f);
  }
  function fmtAge(s) {
    if (s < 0) { s = 0; }
    if (s < 90) { return Math.floor(s) + " s"; }
    if (s < 5400) { return Math.floor(s / 60) + " min"; }
    return Math.floor(s / 3600) + " h";
  }
  function ago(s) {  // monitor/alarms/text.py ago()
    s = Math.max(0, Math.floor(s));
    if (s < 5) { return "just now"; }
    if (s < 90) { return s + " s ago"; }
    if (s < 5400) { return Math.floor(s / 60) + " min ago"; }
    return Math.floor(s / 3600) + " h ago";
  }
  function fmtVal(m, v) { return (v === null || v === undefined) ? "--" : (m === "temp" ? v.toFixed(1) : String(Math.round(v))); }
  function esc(s) { return String(s === undefined || s === null ? "" : s).replace(/[&<>"']/g, function (c) { return "&#" + c.charCodeAt(0) + ";"; }); }
  function hhmm(ms) { return new Date(ms).toTimeString().slice(0, 5); }
  function hhmmss(ms) { return new Date(ms).toTimeString().slice(0, 8); }
  function roomName(id) { return (VW.cfg.rooms || {})[id] || id; }
  // The room part of a clinic-wide alert (room "*"): "All rooms" or "3 rooms".
  function alertRoomName(a) {
    if (a.room !== "*") { return roomName(a.room); }
    var rooms = String(a.rooms || "").split(",").filter(function (x) { return x; });
    var all = (VW.cfg.order || []).length;
    return (!rooms.length || rooms.length === all) ? "All rooms" : rooms.length + (rooms.length === 1 ? " room" : " rooms");
  }
  // One alarm as a row, as monitor/alarms/text.py alarm_line():
  // "HIGH · Room 2 · SBP 186 > 180 mmHg · 2 min ago · now 161" (parts, so rows can link the room)
  function alarmParts(a, name, nowMs, current) {
    var parts = [PRIO_WORD[a.priority] || String(a.priority || "").toUpperCase(), name || alertRoomName(a),
                 String(a.message || SHORT[a.metric] || "")];
    var raised = (a.raised_ms !== undefined && a.raised_ms !== null) ? a.raised_ms : a.ts;
    parts.push((nowMs !== null && nowMs !== undefined && raised !== undefined && raised !== null) ? ago((nowMs - raised) / 1000) : "");
    parts.push((current !== null && current !== undefined && a.metric) ? "now " + num(current) : "");
    parts.push(a.state === "latched" ? "latched" : "");
    return parts;
  }
  function alarmLine(a, name, nowMs, current) {
    return alarmParts(a, name, nowMs, current).filter(function (p) { return p; }).join(" · ");
  }
  VW.fmt = {alarmLine: alarmLine, ago: ago, fmtAge: fmtAge, fmtVal: fmtVal, roomName: roomName};

  // ---------------------------------------------------------------- DOM index
  function index() {
    var idx = {rooms: {}, alerts: [], reminders: [], trends: []};
    var els = document.querySelectorAll("[data-vw-room][data-vw-part]");
    for (var i = 0; i < els.length; i++) {
      var el = els[i], room = el.getAttribute("data-vw-room"), part = el.getAttribute("data-vw-part");
      var r = idx.rooms[room] || (idx.rooms[room] = {value: {}, age: {}, cell: {}, phase: [], devices: [], spark: [],
                                                      tile: [], chips: [], notmon: []});
      var m = el.getAttribute("data-vw-metric");
      if (part === "value" || part === "age" || part === "cell") { (r[part][m] || (r[part][m] = [])).push(el); }
      else if (r[part]) { r[part].push(el); }
    }
    idx.alerts = Array.prototype.slice.call(document.querySelectorAll("[data-vw-alerts]"));
    idx.reminders = Array.prototype.slice.call(document.querySelectorAll("[data-vw-reminders]"));
    idx.trends = Array.prototype.slice.call(document.querySelectorAll("[data-vw-trend]"));
    idx.overview = !!document.querySelector("[data-vw-overview]");
    idx.tiles = 0;
    for (var t in idx.rooms) { if (idx.rooms[t].tile.length) { idx.tiles++; } }
    VW.idx = idx;
    markAll();
  }
  VW.reindex = index;
  var reindexPending = false;
  function scheduleIndex() {
    if (reindexPending) { return; }
    reindexPending = true;
    setTimeout(function () { reindexPending = false; index(); }, 30);
  }
  var WATCHED = "[data-vw-room],[data-vw-alerts],[data-vw-trend],[data-vw-reminders],[data-vw-overview]";
  new MutationObserver(function (muts) {
    for (var i = 0; i < muts.length; i++) {
      var added = muts[i].addedNodes;
      for (var j = 0; j < added.length; j++) {
        var n = added[j];
        if (n.nodeType === 1 && !n.__vwOwn && (n.matches(WATCHED) || n.querySelector(WATCHED))) {
          for (var h = 0; h < VW.hooks.length; h++) { if (VW.hooks[h].added) { VW.hooks[h].added(); } }
          scheduleIndex(); return;
        }
      }
    }
  }).observe(document.documentElement, {childList: true, subtree: true});

  // ---------------------------------------------------------------- dirty marks, one flush per frame
  // Values are written in a microtask after the socket message that changed them (all the
  // readings of one frame from the server in one pass), so they show in the very next frame:
  // with a requestAnimationFrame flush, a reading that arrived just before a frame waited for
  // the one after (up to two frames, ~33 ms, where one is the floor). Writing a text node does
  // not lay out; the browser still renders once per frame. Rooms, lists, sparklines and the
  // full redraws stay on the animation frame.
  var dirty = {values: {}, rooms: {}, lists: false, all: false};
  var framePending = false, valuesPending = false;
  function schedule() {
    if (framePending) { return; }
    framePending = true;
    requestAnimationFrame(flush);
  }
  function flushValues() {
    valuesPending = false;
    if (!VW.idx || dirty.all) { schedule(); return; }
    for (var room in dirty.values) { for (var m in dirty.values[room]) { applyValue(room, m); } }
    dirty.values = {};
  }
  function markAll() { dirty.all = true; schedule(); }
  function markValueNow(room, m) {
    (dirty.values[room] || (dirty.values[room] = {}))[m] = true;
    if (!valuesPending) { valuesPending = true; queueMicrotask(flushValues); }
  }
  // A new reading: written at once (above) — on an overview of many rooms too, as long as the
  // page is within its frame budget (below); past it, with the other rooms' readings in the
  // next frame the budget allows.
  function markValue(room, m) {
    if (!budgeted()) { markValueNow(room, m); return; }
    (held[room] || (held[room] = {}))[m] = true;
    requestHeldFlush();
  }

  // ---------------------------------------------------------------- frame budget (big overview)
  // Every frame in which a value changes costs the browser a paint and a composite (~3.5 ms of
  // CPU on these machines, whatever the number of tiles changed). Readings that arrive
  // together (a gateway forwarding its monitors at once) take one or two frames a second,
  // however many rooms; independent monitors sending at their own moments of the second make
  // ~100 socket messages a second at 100 rooms, and written at once nearly every 16-ms frame
  // had a change: 25-30 % of a core. So on an overview of at least minRooms tiles, frames that
  // write readings are counted against a budget of perSecond (a token bucket holding at most
  // one second's worth): while tokens are left a reading is written in the very next frame, as
  // on the room page; when they run out, readings are held and written together as soon as the
  // next token comes (every 1000/perSecond ms), only changed text and attributes. So a reading
  // arriving alone, or with its burst, is never held; under a continuous spread the tiles are
  // at most 1000/perSecond ms behind. Everything about alarm state — a tile's alarm colour and
  // the alarmed value's marking (an "alerts" message writes the room's values and tile in the
  // next frame), NOT MONITORED on tiles, the NOT MONITORING banner, connection lost — never
  // waits for the budget (benchmarks/overview_scale.py, docs/dashboard.md "Update policy").
  VW.frameBudget = {minRooms: 30, perSecond: 8};
  VW.budgetFlushes = 0;  // budgeted writes (benchmarks count them)
  VW.heldFlushes = 0;  // of which held for a token
  var held = {}, heldPending = false, heldTimer = null, agesDue = false;
  var tokens = null, tokensAtMs = 0;
  function budgeted() {
    return !!(VW.idx && VW.idx.overview && VW.idx.tiles >= VW.frameBudget.minRooms);
  }
  function refill(t) {
    var rate = VW.frameBudget.perSecond;
    tokens = tokens === null ? rate : Math.min(rate, tokens + (t - tokensAtMs) * rate / 1000);
    tokensAtMs = t;
  }
  function requestHeldFlush() {
    if (heldPending) { return; }
    heldPending = true;
    var t = now();
    refill(t);
    if (tokens >= 1) { queueMicrotask(flushHeld); return; }
    heldTimer = setTimeout(flushHeld, Math.ceil((1 - tokens) * 1000 / VW.frameBudget.perSecond));
  }
  function flushHeld() {
    var t = now();
    if (heldTimer !== null) { heldTimer = null; VW.heldFlushes++; }  // it waited for a token
    heldPending = false; VW.budgetFlushes++;
    refill(t);
    tokens -= 1;  // a burst split over a few socket messages costs a few: a second's worth is kept
    var batch = held;
    held = {};
    if (agesDue) { agesDue = false; tickAges(); }  // the once-a-second ages in the same frame
    if (!VW.idx || dirty.all) { return; }  // the full redraw of the next frame writes them
    for (var room in batch) { for (var m in batch[room]) { applyValue(room, m); } }
  }
  function ages() {
    if (!budgeted()) { tickAges(); return; }
    agesDue = true;
    requestHeldFlush();
  }
  function markRoom(room) { dirty.rooms[room] = true; dirty.lists = true; schedule(); }
  function flush() {
    framePending = false;
    VW.frames++;
    if (!VW.idx) { return; }
    var room, m;
    if (dirty.all) {
      dirty.all = false; dirty.values = {}; dirty.rooms = {};
      for (room in VW.idx.rooms) {
        var st = VW.rooms[room];
        if (!st) { continue; }
        for (m in VW.idx.rooms[room].value) { applyValue(room, m); }
        applyRoom(room); VW.sparkDirty[room] = true;
      }
      applyLists(); tickAges(); drawSparks();
      return;
    }
    for (room in dirty.values) { for (m in dirty.values[room]) { applyValue(room, m); } }
    dirty.values = {};
    for (room in dirty.rooms) { applyRoom(room); }
    dirty.rooms = {};
    if (dirty.lists) { dirty.lists = false; applyLists(); }
  }

  // ---------------------------------------------------------------- applying state
  function staleAfterS(m, dev) {
    if (NIBP[m]) { return ((VW.cfg.nibp_cycle_s || {})[dev] || 300) + 60; }
    return VW.cfg.stale_s || 5;
  }
  // The active physiological alarm on a metric of a room (marks the value itself).
  function breachOf(room, m) {
    var a = ((VW.rooms[room] || {}).alerts || []), best = null;
    for (var i = 0; i < a.length; i++) {
      var x = a[i];
      if (x.kind === "physiological" && x.metric === m && x.state === "active" &&
          (best === null || PRIO[x.priority] < PRIO[best.priority])) { best = x; }
    }
    return best;
  }
  function sideOf(a) {
    if (!a || a.value === null || a.value === undefined || a.limit === null || a.limit === undefined) { return "high"; }
    return Number(a.value) < Number(a.limit) ? "low" : "high";
  }
  function valueLabel(room, m, x, breach) {
    var text = (SHORT[m] || m) + " " + (x ? fmtVal(m, x.v) + " " + (UNIT[m] || "") : "no data");
    if (breach) {
      text += ", " + (sideOf(breach) === "low" ? "below low limit " : "above high limit ") + num(breach.limit) +
        " (" + (breach.priority || "") + " alarm)";
    }
    return text.replace(/\s+,/, ",").trim();
  }
  function applyValue(room, m) {
    var r = VW.idx && VW.idx.rooms[room];
    if (!r || !r.value[m]) { return; }
    var st = VW.rooms[room] || {latest: {}}, x = (st.latest || {})[m], els = r.value[m];
    var breach = breachOf(room, m), side = breach ? sideOf(breach) : null;
    var label = valueLabel(room, m, x, breach);
    for (var i = 0; i < els.length; i++) {
      var el = els[i];
      setText(el, fmtVal(m, x ? x.v : null));
      setAttr(el, "data-vw-ts", x ? String(x.ts) : "0");
      setAttr(el, "data-vw-alarm", side);
      setAttr(el, "data-vw-alarm-priority", breach ? breach.priority : null);
      setAttr(el, "aria-label", label);
      if (x) { setAttr(el, "data-vw-stale", isStale(m, x, now()) ? "1" : "0"); }
    }
  }
  function isStale(m, x, t) { return !x || !x.ts || (t - x.ts) / 1000 > staleAfterS(m, x.dev); }
  function tickAges() {
    if (!VW.idx) { return; }
    var t = now();
    for (var room in VW.idx.rooms) {
      var r = VW.idx.rooms[room], st = VW.rooms[room] || {latest: {}}, latest = st.latest || {};
      for (var m in r.value) {
        var s = isStale(m, latest[m], t) ? "1" : "0", els = r.value[m];
        for (var i = 0; i < els.length; i++) { setAttr(els[i], "data-vw-stale", s); }
      }
      for (var am in r.age) {
        var ax = latest[am], text = ax && ax.ts ? fmtAge((t - ax.ts) / 1000) : "no data";
        var stale = ax && ax.ts && isStale(am, ax, t) ? "1" : "0";
        for (var k = 0; k < r.age[am].length; k++) {
          setText(r.age[am][k], stale === "1" ? text + " old" : text);
          setAttr(r.age[am][k], "data-vw-stale", stale);
        }
      }
      applyPhase(room, t);
      applyChips(room, t);
    }
  }
  function phaseOf(s, t) {
    if (!s) { return ["none", "no session"]; }
    if (s.state === "ended" || s.state === "archived") { return ["ended", "session ended"]; }
    if (s.ready_ms) { return ["ready", "ready to leave"]; }
    if (!s.first_dose_ms) { return ["pre-dose", "pre-dose"]; }
    return ["post-dose", Math.max(0, Math.floor((t - s.first_dose_ms) / 60000)) + " min since dose"];
  }
  function applyPhase(room, t) {
    var r = VW.idx && VW.idx.rooms[room];
    if (!r || !r.phase.length) { return; }
    var p = phaseOf((VW.rooms[room] || {}).session, t || now());
    for (var i = 0; i < r.phase.length; i++) {
      setText(r.phase[i], p[1]);
      setAttr(r.phase[i], "data-vw-phase", p[0]);
    }
  }
  function applyDevices(room) {
    var r = VW.idx && VW.idx.rooms[room], devs = (VW.rooms[room] || {}).devices || {};
    if (!r || !r.devices.length) { return; }
    var html = "";
    for (var d in devs) {
      html += '<span class="vw-dev" data-state="' + esc(devs[d].state) + '" title="' + esc(devs[d].detail) + '">' +
        esc(d) + " " + esc(devs[d].state) + "</span>";
    }
    for (var i = 0; i < r.devices.length; i++) { if (r.devices[i].__vwHtml !== html) { r.devices[i].__vwHtml = html; r.devices[i].innerHTML = html; } }
  }
  function highest(alerts) {
    var best = null;
    for (var i = 0; i < alerts.length; i++) {
      var p = alerts[i].priority;
      if (best === null || PRIO[p] < PRIO[best]) { best = p; }
    }
    return best;
  }
  function alarmsOnly(list) {
    return (list || []).filter(function (a) { return a.kind !== "reminder" && a.state !== "dismissed"; });
  }
  // Why a room is not monitored now: a clinic-wide alarm naming it, or a problem that stops
  // monitoring everywhere (alert engine, Redis, this screen's connection). "" when monitored.
  function notMonitored(room) {
    if (!connectedNow()) { return "connection to the server lost"; }
    if (VW.mon && !VW.mon.ok && (VW.mon.everywhere || []).length) { return VW.mon.everywhere[0]; }
    for (var i = 0; i < VW.clinic.length; i++) {
      var c = VW.clinic[i];
      if (c.state === "active" && ("," + (c.rooms || "") + ",").indexOf("," + room + ",") >= 0) { return c.cause || c.message; }
    }
    return "";
  }
  VW.notMonitored = notMonitored;
  function applyRoom(room) {
    var r = VW.idx && VW.idx.rooms[room];
    if (!r) { return; }
    var level = highest(alarmsOnly((VW.rooms[room] || {}).alerts)) || "none";
    for (var i = 0; i < r.tile.length; i++) { setAttr(r.tile[i], "data-alert", level); }
    var why = notMonitored(room);
    for (var j = 0; j < r.notmon.length; j++) {
      setText(r.notmon[j], why ? "NOT MONITORED: " + why : "");
      setAttr(r.notmon[j], "data-on", why ? "1" : "0");
    }
    for (var k = 0; k < r.tile.length; k++) { setAttr(r.tile[k], "data-vw-notmon", why ? "1" : "0"); }
    for (var m in r.value) { applyValue(room, m); }
    applyDevices(room); applyPhase(room); applyChips(room, now());
  }
  // Reminders on a tile: quiet chips (never an alarm colour), with live countdowns.
  function chipText(a, t) {
    if (a.cond === "r:observe" && a.due_ms) {
      var left = Math.max(0, Math.ceil((a.due_ms - t) / 60000));
      return "Observation: " + left + " min left";
    }
    return a.message;
  }
  function applyChips(room, t) {
    var r = VW.idx && VW.idx.rooms[room];
    if (!r || !r.chips.length) { return; }
    var rem = ((VW.rooms[room] || {}).alerts || []).filter(function (a) { return a.kind === "reminder" && a.state !== "dismissed"; });
    var html = rem.map(function (a) {
      return '<span class="vw-chip" data-alert-id="' + esc(a.alert) + '">' + esc(chipText(a, t)) + "</span>";
    }).join("");
    for (var i = 0; i < r.chips.length; i++) { if (r.chips[i].__vwHtml !== html) { r.chips[i].__vwHtml = html; r.chips[i].innerHTML = html; } }
  }

  // ---------------------------------------------------------------- alarm and reminder lists (keyed rows)
  function allAlerts(room, reminders) {
    var out = [], rm, i;
    if (room === "*" && !reminders) { for (i = 0; i < VW.clinic.length; i++) { out.push(VW.clinic[i]); } }
    for (rm in VW.rooms) {
      if (room !== "*" && rm !== room) { continue; }
      var a = VW.rooms[rm].alerts || [];
      for (i = 0; i < a.length; i++) {
        if (a[i].state === "dismissed") { continue; }
        if ((a[i].kind === "reminder") === !!reminders) { out.push(a[i]); }
      }
    }
    if (room !== "*" && !reminders) {
      for (i = 0; i < VW.clinic.length; i++) {
        if (("," + (VW.clinic[i].rooms || "") + ",").indexOf("," + room + ",") >= 0) { out.push(VW.clinic[i]); }
      }
    }
    out.sort(function (x, y) {
      return (PRIO[x.priority] - PRIO[y.priority]) || ((x.state === "latched") - (y.state === "latched")) ||
        ((y.raised_ms || 0) - (x.raised_ms || 0));
    });
    return out;
  }
  function canUndo(a, t) {
    return a.acknowledged_by && VW.user && a.acknowledged_by === VW.user.name && a.state === "active" &&
      t - (a.acknowledged_ms || 0) + VW.serverSkewMs < (VW.cfg.undo_s || 10) * 1000;
  }
  function currentOf(a) {
    if (!a.metric || a.room === "*") { return null; }
    var x = ((VW.rooms[a.room] || {}).latest || {})[a.metric];
    return x ? x.v : null;
  }
  function rowSig(a, t) {
    return [a.priority, a.state, a.acknowledged_by || "", (a.paused_until_ms || 0) > t ? a.paused_until_ms : 0,
            a.escalated ? 1 : 0, canUndo(a, t) ? 1 : 0, a.message, a.rooms || ""].join("|");
  }
  function alarmRowHtml(a, t) {
    var paused = (a.paused_until_ms || 0) > t;
    var name = alertRoomName(a);
    var parts = alarmParts(a, name, t, currentOf(a));
    var room = a.room === "*" ? '<span class="vw-alertroom">' + esc(name) + "</span>"
      : '<a class="vw-alertroom" href="/room/' + encodeURIComponent(a.room) + '">' + esc(name) + "</a>";
    var state = [];
    if (a.state === "latched") { state.push("condition ended" + (a.cleared_ms ? " " + hhmm(a.cleared_ms) : "") + " — reset when seen"); }
    if (a.escalated) { state.push("escalated"); }
    if (a.acknowledged_by) { state.push("acknowledged by " + a.acknowledged_by); }
    if (paused) { state.push("audio paused until " + hhmmss(a.paused_until_ms)); }
    var btn = function (act, label, cls) {
      return '<button type="button" class="vw-btn ' + cls + '" data-act="' + act + '">' + label + "</button>";
    };
    var buttons = "";
    if (!a.acknowledged_by) { buttons += btn("acknowledge", "Acknowledge", "vw-ack"); }
    if (canUndo(a, t)) { buttons += btn("unacknowledge", "Undo acknowledge", "vw-undo"); }
    if (a.state === "active" && !a.acknowledged_by && !paused) { buttons += btn("pause", "Pause audio 2 min", "vw-pause"); }
    if (a.state === "latched") { buttons += btn("reset", "Reset", "vw-reset"); }
    return '<span class="vw-pri">' + esc(parts[0]) + '</span><span class="vw-line"><span class="vw-sr"> · </span>' +
      room + '<span class="vw-dot" aria-hidden="true"> · </span><span class="vw-msg">' + esc(parts[2]) + "</span>" +
      '<span class="vw-when" data-part="when">' + (parts[3] ? " · " + esc(parts[3]) : "") + "</span>" +
      '<span class="vw-now" data-part="now">' + (parts[4] ? " · " + esc(parts[4]) : "") + "</span>" +
      (parts[5] ? '<span class="vw-latched"> · latched</span>' : "") + "</span>" +
      (state.length ? '<span class="vw-state">' + esc(state.join(" · ")) + "</span>" : "") +
      '<span class="vw-actions">' + buttons + "</span>";
  }
  function reminderRowHtml(a, t) {
    // the separator only for screen readers: the room and the message are apart (flex gap) and a
    // narrow pane wraps the message under the room, where a visible "·" would begin the line
    return '<span class="vw-alertroom">' + esc(roomName(a.room)) + '</span><span class="vw-sr"> · </span><span class="vw-msg">' + esc(a.message) +
      '</span><span class="vw-actions"><button type="button" class="vw-btn vw-dismiss" data-act="dismiss">Dismiss</button></span>';
  }
  function renderKeyed(el, list, reminders, t) {
    var rows = el.__vwRows || (el.__vwRows = {}), seen = {}, prev = null, i;
    var empty = el.__vwEmpty;
    if (!list.length) {
      for (var id in rows) { rows[id].el.remove(); }
      el.__vwRows = {};
      if (!empty) {
        empty = el.__vwEmpty = document.createElement("div");
        empty.__vwOwn = true;
        empty.className = "vw-noalerts";
        empty.setAttribute("role", "listitem");
        empty.textContent = reminders ? "No reminders" : "No active alarms";
        el.appendChild(empty);
      }
      return;
    }
    if (empty) { empty.remove(); el.__vwEmpty = null; }
    for (i = 0; i < list.length; i++) {
      var a = list[i], key = a.alert, sig = reminders ? a.message + "|" + (a.due_ms || "") : rowSig(a, t);
      seen[key] = true;
      var row = rows[key];
      if (!row) {
        var div = document.createElement("div");
        div.__vwOwn = true;
        div.setAttribute("role", "listitem");
        div.setAttribute("data-alert-id", a.alert);
        div.setAttribute("data-room", a.room);
        row = rows[key] = {el: div, sig: null};
      }
      if (row.sig !== sig) {
        var focused = document.activeElement && row.el.contains(document.activeElement) ?
          document.activeElement.getAttribute("data-act") : null;
        row.el.className = reminders ? "vw-reminder" : "vw-alert vw-alert-" + a.priority + (a.state === "latched" ? " vw-alert-latched" : "");
        row.el.innerHTML = reminders ? reminderRowHtml(a, t) : alarmRowHtml(a, t);
        row.sig = sig;
        if (focused) {  // keep the keyboard where it was: a re-drawn row must not lose focus
          var again = row.el.querySelector('[data-act="' + focused + '"]') || row.el.querySelector("button");
          if (again) { again.focus(); }
        }
      } else if (!reminders) {
        var parts = alarmParts(a, "", t, currentOf(a));
        var w = row.el.querySelector('[data-part="when"]'), n = row.el.querySelector('[data-part="now"]');
        if (w) { setText(w, parts[3] ? " · " + parts[3] : ""); }
        if (n) { setText(n, parts[4] ? " · " + parts[4] : ""); }
      }
      var want = prev ? prev.nextSibling : el.firstChild;
      if (want !== row.el) { el.insertBefore(row.el, want); }
      prev = row.el;
    }
    for (var k in rows) { if (!seen[k]) { rows[k].el.remove(); delete rows[k]; } }
  }
  function applyLists() {
    if (!VW.idx) { return; }
    var t = now(), i;
    for (i = 0; i < VW.idx.alerts.length; i++) {
      var el = VW.idx.alerts[i];
      renderKeyed(el, allAlerts(el.getAttribute("data-vw-alerts"), false), false, t);
    }
    for (i = 0; i < VW.idx.reminders.length; i++) {
      var r = VW.idx.reminders[i];
      renderKeyed(r, allAlerts(r.getAttribute("data-vw-reminders"), true), true, t);
    }
    for (var h = 0; h < VW.hooks.length; h++) { if (VW.hooks[h].lists) { VW.hooks[h].lists(); } }
  }

  // ---------------------------------------------------------------- sparklines (SVG, throttled)
  function drawSparks() {
    if (!VW.idx) { return; }
    var t = now(), t0 = t - 15 * 60000;
    for (var room in VW.sparkDirty) {
      var r = VW.idx.rooms[room], st = VW.rooms[room];
      if (!r || !st || !r.spark.length || !r.spark[0].offsetParent) { continue; }  // hidden: skip the work
      var svg = '<svg viewBox="0 0 300 40" preserveAspectRatio="none" class="vw-sparksvg" aria-hidden="true" focusable="false">';
      var colors = {hr: "#2e7d32", spo2: "#1565c0"};
      for (var m in colors) {
        var pts = (st.spark || {})[m] || [];
        if (pts.length < 2) { continue; }
        var lo = Infinity, hi = -Infinity;
        for (var i = 0; i < pts.length; i++) { lo = Math.min(lo, pts[i][1]); hi = Math.max(hi, pts[i][1]); }
        if (hi - lo < 5) { hi = lo + 5; }
        var s = "";
        for (var j = 0; j < pts.length; j++) {
          var x = Math.max(0, (pts[j][0] - t0) / (t - t0) * 300), y = 38 - (pts[j][1] - lo) / (hi - lo) * 36;
          s += x.toFixed(1) + "," + y.toFixed(1) + " ";
        }
        svg += '<polyline fill="none" stroke="' + colors[m] + '" stroke-width="1.5" vector-effect="non-scaling-stroke" points="' + s + '"/>';
      }
      svg += "</svg>";
      for (var k = 0; k < r.spark.length; k++) { r.spark[k].innerHTML = svg; }
    }
    VW.sparkDirty = {};
  }
  function sparkAdd(room, ts, vals) {
    var st = VW.rooms[room], b = 10000;
    if (!st.spark) { st.spark = {hr: [], spo2: []}; }
    ["hr", "spo2"].forEach(function (m) {
      if (vals[m] === undefined) { return; }
      var pts = st.spark[m] || (st.spark[m] = []), c = Math.floor(ts / b) * b + b / 2;
      if (pts.length && pts[pts.length - 1][0] === c) { pts[pts.length - 1][1] = (pts[pts.length - 1][1] + vals[m]) / 2; }
      else { pts.push([c, vals[m]]); }
      while (pts.length && pts[0][0] < ts - 15 * 60000) { pts.shift(); }
    });
    VW.sparkDirty[room] = true;
  }

  // ---------------------------------------------------------------- trends (bounded extendData)
  function trendAdd(room, ts, vals) {
    if (!VW.idx || !VW.idx.trends.length) { return; }
    var q = VW.trendQueue[room] || (VW.trendQueue[room] = []);
    q.push([ts, vals]);
    if (q.length > 600) { q.shift(); }
  }
  var userZoomed = {}, ourRelayout = false;
  function flushTrends() {
    if (!VW.idx) { return; }
    for (var i = 0; i < VW.idx.trends.length; i++) {
      var wrap = VW.idx.trends[i], room = wrap.getAttribute("data-vw-trend");
      var shift = parseInt(wrap.getAttribute("data-vw-shift-ms") || "0", 10);
      var gd = wrap.querySelector(".js-plotly-plot");
      var graphId = gd && gd.parentElement && gd.parentElement.id ? gd.parentElement.id : "room-trend";
      if (gd && !gd.__vwHooked && gd.on) {
        gd.__vwHooked = true;
        gd.on("plotly_relayout", function (ev) {
          if (ourRelayout) { return; }
          if (ev["xaxis.autorange"] || ev["xaxis4.autorange"]) { userZoomed[room] = false; }
          else if (Object.keys(ev).some(function (k) { return k.indexOf("range") >= 0; })) { userZoomed[room] = true; }
        });
      }
      var q = VW.trendQueue[room];
      if (q && q.length && window.dash_clientside && window.dash_clientside.set_props) {
        var xs = [], ys = [], ix = [];
        TREND_TRACES.forEach(function (m, ti) {
          var x = [], y = [];
          for (var j = 0; j < q.length; j++) { if (q[j][1][m] !== undefined) { x.push(q[j][0] + shift); y.push(q[j][1][m]); } }
          if (x.length) { xs.push(x); ys.push(y); ix.push(ti); }
        });
        VW.trendQueue[room] = [];
        if (ix.length) { window.dash_clientside.set_props(graphId, {extendData: [{x: xs, y: ys}, ix, TREND_MAX_POINTS]}); }
      }
      var sel = document.querySelector("#room-window input:checked");
      var winMin = sel ? parseInt(sel.value, 10) : 15;
      if (gd && gd.layout && !userZoomed[room] && winMin && window.Plotly && (VW.slideTick++ % 5 === 0)) {
        var t = now() + shift;
        ourRelayout = true;
        try { window.Plotly.relayout(gd, {"xaxis.range": [t - winMin * 60000, t + 30000]}); } finally { ourRelayout = false; }
      }
    }
  }
  VW.slideTick = 0;

  // ---------------------------------------------------------------- messages
  function setRoomAlerts(room, alerts) {
    var st = VW.rooms[room];
    if (!st) { return; }
    st.alerts = alerts;
    for (var m in NIBP_AND_ALL) { markValueNow(room, m); }  // alarm marks: never held
    markRoom(room);
  }
  var NIBP_AND_ALL = {hr: 1, spo2: 1, sbp: 1, dbp: 1, map: 1, rr: 1, temp: 1, pi: 1};
  function reading(room, ts, dev, vals) {
    var st = VW.rooms[room];
    if (!st) { return; }
    for (var m in vals) {
      var cur = st.latest[m];
      if (!cur || ts >= cur.ts) {
        st.latest[m] = {v: vals[m], ts: ts, dev: dev};
        markValue(room, m);
      }
    }
    sparkAdd(room, ts, vals);
    trendAdd(room, ts, vals);
  }
  function onMessage(msg) {
    VW.received++;
    var t = msg.t, st, room;
    if (t === "v") {
      reading(msg.room, msg.ts, msg.dev, msg.vals);
    } else if (t === "vb") {  // a room's catch-up: its readings in order
      for (var k = 0; k < msg.rows.length; k++) { reading(msg.room, msg.rows[k][0], msg.rows[k][1], msg.rows[k][2]); }
    } else if (t === "hello") {
      VW.rooms = msg.rooms; VW.mon = msg.mon; VW.user = msg.user; VW.cfg = msg.cfg || VW.cfg;
      VW.clinic = msg.clinic || [];
      if (msg.server_ms) { VW.serverSkewMs = now() - msg.server_ms; }
      for (var h = 0; h < VW.hooks.length; h++) { if (VW.hooks[h].hello) { VW.hooks[h].hello(); } }
      if (!VW.idx) { index(); } else { markAll(); }
      soundTick();
    } else if (t === "alerts") {
      if (msg.room === "*") {
        VW.clinic = msg.alerts;
        for (room in VW.rooms) { markRoom(room); }
      } else { setRoomAlerts(msg.room, msg.alerts); }
      dirty.lists = true; schedule(); soundTick();
    } else if (t === "spark") {
      st = VW.rooms[msg.room]; if (!st) { return; }
      st.spark = msg.spark; VW.sparkDirty[msg.room] = true;
    } else if (t === "dev") {
      st = VW.rooms[msg.room]; if (!st) { return; }
      st.devices = msg.devices; markRoom(msg.room);
    } else if (t === "sess") {
      st = VW.rooms[msg.room]; if (!st) { return; }
      st.session = msg.session; markRoom(msg.room);
    } else if (t === "mon") {
      var was = VW.mon && VW.mon.ok;
      VW.mon = msg; banner();
      if (was !== msg.ok) { for (room in VW.rooms) { markRoom(room); } }
    } else if (t === "logout") {
      window.location.href = "/login?expired=1&next=" + encodeURIComponent(location.pathname);
    }
  }
  var backoff = 500;
  function connect() {
    var ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/live");
    VW.ws = ws;
    ws.addEventListener("open", function () { VW.connected = true; backoff = 500; reportScreen(); });
    ws.addEventListener("message", function (ev) {
      VW.lastMsgMs = now();
      var data = JSON.parse(ev.data);
      if (Array.isArray(data)) { for (var i = 0; i < data.length; i++) { onMessage(data[i]); } } else { onMessage(data); }
    });
    ws.addEventListener("close", function (ev) {
      VW.connected = false; banner();
      for (var room in VW.rooms) { markRoom(room); }
      if (ev.code === 4401 || ev.code === 4403) { window.location.href = "/login?next=" + encodeURIComponent(location.pathname); return; }
      setTimeout(connect, backoff); backoff = Math.min(backoff * 2, 4000);
    });
  }
  function send(obj) { if (VW.ws && VW.ws.readyState === 1) { VW.ws.send(JSON.stringify(obj)); } }
  function connectedNow() { return VW.connected && now() - VW.lastMsgMs <= LOST_AFTER_MS; }

  // ---------------------------------------------------------------- NOT MONITORING banner
  var lastBannerLost = null;
  function banner() {
    var el = document.getElementById("vw-banner");
    if (!el) {
      el = document.createElement("div"); el.id = "vw-banner"; el.className = "vw-banner";
      el.setAttribute("role", "alert");
      el.__vwOwn = true;
      document.body.insertBefore(el, document.body.firstChild);
    }
    var reasons = [], lost = !connectedNow();
    if (lost) { reasons.push("connection to the server lost"); }
    else if (VW.mon && !VW.mon.ok) { reasons = VW.mon.reasons || ["unknown"]; }
    var text = reasons.length ? "NOT MONITORING — " + reasons.join("; ") : "";
    if (el.__vwText !== text) {
      el.__vwText = text; el.textContent = text;
      el.style.display = text ? "block" : "none";
      document.documentElement.classList.toggle("vw-not-monitoring", !!text);
      for (var h = 0; h < VW.hooks.length; h++) { if (VW.hooks[h].resize) { VW.hooks[h].resize(); } }
    }
    if (lost !== lastBannerLost) { lastBannerLost = lost; for (var room in VW.rooms) { markRoom(room); } }
  }

  // ---------------------------------------------------------------- sound
  function soundOn() { return !!(VW.audio.ctx && VW.audio.ctx.state === "running" && !VW.audio.muted); }
  function beep(spec) {
    var ctx = VW.audio.ctx, t0 = ctx.currentTime + 0.02;
    VW.audio.log.push({hz: spec.hz, pulses: spec.pulses.slice(), len: spec.len, at: now()});
    if (VW.audio.log.length > 50) { VW.audio.log.shift(); }
    spec.pulses.forEach(function (off) {
      var o = ctx.createOscillator(), g = ctx.createGain();
      o.type = "square"; o.frequency.value = spec.hz;
      g.gain.setValueAtTime(0, t0 + off);
      g.gain.linearRampToValueAtTime(0.25, t0 + off + 0.015);
      g.gain.setValueAtTime(0.25, t0 + off + spec.len - 0.02);
      g.gain.linearRampToValueAtTime(0, t0 + off + spec.len);
      o.connect(g); g.connect(ctx.destination); o.start(t0 + off); o.stop(t0 + off + spec.len + 0.01);
    });
  }
  VW.beep = beep;
  function audibleAlerts() {
    var t = now(), out = [], i;
    var consider = function (a) {
      if (a.kind === "reminder" || a.state === "dismissed") { return; }  // reminders never sound
      if (!a.acknowledged_by && !((a.paused_until_ms || 0) > t)) { out.push(a); }
    };
    for (var room in VW.rooms) {
      var a = VW.rooms[room].alerts || [];
      for (i = 0; i < a.length; i++) { consider(a[i]); }
    }
    for (i = 0; i < VW.clinic.length; i++) { consider(VW.clinic[i]); }
    return out;
  }
  function soundTick() {
    var level = highest(audibleAlerts());
    VW.audio.playing = level;
    if (!level) { return; }
    var t = now(), spec = SOUND[level];
    if (t - (VW.audio.lastPlayMs[level] || 0) < spec.every_ms) { return; }
    VW.audio.lastPlayMs[level] = t;
    if (soundOn()) { beep(spec); VW.audio.plays++; }
  }
  function soundButton() {
    var b = document.getElementById("app-sound");
    if (!b) { return; }
    var on = soundOn(), label = on ? SOUND_ON_TEXT : SOUND_OFF_TEXT;
    if (b.textContent !== label) {
      b.textContent = label; b.className = "vw-sound " + (on ? "vw-sound-on" : "vw-sound-off");
      b.setAttribute("aria-pressed", on ? "true" : "false");
    }
  }
  var lastSoundReport = null;
  function reportScreen() {
    var id = localStorage.getItem("vw-screen") || ("screen-" + Math.random().toString(36).slice(2, 10));
    localStorage.setItem("vw-screen", id);
    lastSoundReport = soundOn();
    send({t: "screen", id: id, sound_on: lastSoundReport});
  }
  function startAudio() {
    var AC = window.AudioContext || window.webkitAudioContext;
    if (!AC) { return; }
    if (!VW.audio.ctx) { VW.audio.ctx = new AC(); }
    VW.audio.muted = false;
    VW.audio.ctx.resume().then(function () { soundButton(); reportScreen(); beep({hz: 660, pulses: [0], len: 0.08}); });
  }

  // ---------------------------------------------------------------- actions
  function postAction(alertId, act, creds) {
    return fetch("/api/v1/alerts/" + encodeURIComponent(alertId) + "/" + act, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-VW-Request": "1"},
      body: JSON.stringify(creds || {})
    }).then(function (r) { return r.json().then(function (body) { return {status: r.status, body: body}; }); });
  }
  var ACT_TITLE = {acknowledge: "Acknowledge", pause: "Pause audio", reset: "Reset", dismiss: "Dismiss reminder",
                   unacknowledge: "Undo acknowledge"};
  function stationPrompt(alertId, act, opener) {
    var old = document.getElementById("vw-modal");
    if (old) { old.remove(); }
    var m = document.createElement("div");
    m.id = "vw-modal"; m.className = "vw-modal"; m.__vwOwn = true;
    m.innerHTML = '<form class="vw-modalbox" role="dialog" aria-modal="true" aria-labelledby="vw-ack-title">' +
      '<h2 id="vw-ack-title">' + esc(ACT_TITLE[act] || act) + ' — who is acting?</h2>' +
      '<label for="vw-ack-user">Nurse user name</label><input name="username" id="vw-ack-user" autocomplete="off">' +
      '<label for="vw-ack-pass">Password</label><input name="password" id="vw-ack-pass" type="password" autocomplete="off">' +
      '<div class="vw-modalmsg" id="vw-ack-msg" role="status"></div><button type="submit" id="vw-ack-submit" class="vw-btn vw-ack">Confirm</button> ' +
      '<button type="button" id="vw-ack-cancel" class="vw-btn">Cancel</button></form>';
    document.body.appendChild(m);
    m.querySelector("#vw-ack-user").focus();
    var close = function () { m.remove(); if (opener && opener.focus) { opener.focus(); } };
    m.querySelector("#vw-ack-cancel").addEventListener("click", close);
    m.addEventListener("keydown", function (ev) { if (ev.key === "Escape") { close(); } });
    m.querySelector("form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var creds = {username: m.querySelector("#vw-ack-user").value, password: m.querySelector("#vw-ack-pass").value};
      postAction(alertId, act, creds).then(function (res) {
        if (res.status === 200) { m.remove(); actionDone(res.body); }
        else { m.querySelector("#vw-ack-msg").textContent = res.body.detail || res.body.error || ("refused (" + res.status + ")"); }
      });
    });
  }
  function toast(text) {
    var el = document.getElementById("vw-toast");
    if (!el) {
      el = document.createElement("div"); el.id = "vw-toast"; el.className = "vw-toast"; el.__vwOwn = true;
      el.setAttribute("role", "status");
      document.body.appendChild(el);
    }
    el.textContent = text; el.style.display = text ? "block" : "none";
    clearTimeout(el.__vwTimer);
    el.__vwTimer = setTimeout(function () { el.style.display = "none"; }, 6000);
  }
  function actionDone(alert) {
    if (!alert || !alert.room) { return; }
    var list = alert.room === "*" ? VW.clinic : (VW.rooms[alert.room] || {}).alerts || [];
    for (var i = 0; i < list.length; i++) {
      if (list[i].alert === alert.alert) {
        if (alert.state === "reset") { list.splice(i, 1); } else { list[i] = alert; }
        break;
      }
    }
    if (alert.room !== "*") { setRoomAlerts(alert.room, list); } else { for (var r in VW.rooms) { markRoom(r); } }
    dirty.lists = true; schedule(); soundTick();
  }
  document.addEventListener("click", function (ev) {
    var t = ev.target;
    if (t.id === "app-sound") { startAudio(); return; }
    var act = t.getAttribute && t.getAttribute("data-act");
    if (!act) { return; }
    var row = t.closest("[data-alert-id]");
    if (!row) { return; }
    var id = row.getAttribute("data-alert-id");
    if (VW.user && VW.user.role === "station") { stationPrompt(id, act, t); return; }
    postAction(id, act).then(function (res) {
      if (res.status === 200) { actionDone(res.body); }
      else { toast((ACT_TITLE[act] || act) + " refused: " + (res.body.detail || res.body.error || res.status)); }
    });
  });
  var lastActivity = 0;
  ["pointerdown", "keydown", "wheel", "touchstart"].forEach(function (e) {
    document.addEventListener(e, function () {
      var t = now();
      if (t - lastActivity > 20000) { lastActivity = t; send({t: "activity"}); }
    }, {passive: true});
  });

  // ---------------------------------------------------------------- flashing (2 Hz high, 0.625 Hz medium)
  var BLINK_HALF_MS = {high: 250, medium: 800};
  VW.blinkHold = null;  // tests pin a phase: {high: "0"|"1", medium: "0"|"1"}
  // The phase attribute on <html> only flips while something of that priority is on the
  // page: each flip restyles the page and paints a frame, for nothing when no alarm flashes.
  var FLASHING = {high: '[data-alert="high"],.vw-alert-high', medium: '[data-alert="medium"],.vw-alert-medium'};
  function blink() {
    var t = now(), root = document.documentElement;
    for (var p in BLINK_HALF_MS) {
      var on = VW.blinkHold ? VW.blinkHold[p] : (Math.floor(t / BLINK_HALF_MS[p]) % 2 ? "1" : "0");
      var was = root.getAttribute("data-blink-" + p);
      if (was === on) { continue; }
      if (on === "1" && was !== null && !VW.blinkHold && !document.querySelector(FLASHING[p])) { continue; }
      root.setAttribute("data-blink-" + p, on);
    }
  }
  VW.blinkHalfMs = BLINK_HALF_MS;

  // ---------------------------------------------------------------- timers
  setInterval(function () {
    ages(); banner(); soundButton(); flushTrends();
    if (VW.idx) { dirty.lists = true; schedule(); }  // ages in the rows, undo windows closing
  }, 1000);
  setInterval(function () { banner(); soundTick(); }, 250);
  setInterval(blink, 50);
  setInterval(drawSparks, 5000);
  setInterval(function () { if (soundOn() !== lastSoundReport) { reportScreen(); } }, 1000);
  setInterval(reportScreen, 5000);
  connect();
})();
