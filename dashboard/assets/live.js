/* VitalWatch live layer: one WebSocket (/ws/live) per tab feeds tiles, alert lists, trends,
   sound and the NOT MONITORING banner. Elements are found by data attributes
   (data-vw-room / data-vw-part / data-vw-metric, data-vw-alerts, data-vw-trend), so any page
   that renders them gets live values. Text changes touch single text nodes; charts get
   bounded extendData batches once a second; nothing redraws a whole figure. */
(function () {
  "use strict";
  if (window.VW) { return; }
  var VW = window.VW = {
    rooms: {}, mon: {ok: false, reasons: ["connecting"]}, user: null, cfg: {stale_s: 5, nibp_cycle_s: {}, rooms: {}},
    ws: null, connected: false, lastMsgMs: 0, received: 0,
    audio: {ctx: null, muted: false, playing: null, lastPlayMs: {}, plays: 0},
    trendQueue: {}, sparkDirty: {}, idx: null
  };
  var LOST_AFTER_MS = 3000;            // no message (the server sends one every second) = connection lost
  var TREND_TRACES = ["hr", "spo2", "sbp", "dbp", "map", "rr"];
  var TREND_MAX_POINTS = 3000;
  var NIBP = {sbp: 1, dbp: 1, map: 1};
  var PRIO = {high: 0, medium: 1, low: 2};
  // Alarm sound per priority: pulse pitch, pulses, gap between pulses and repeat interval.
  var SOUND = {
    high: {hz: 960, pulses: [0, 0.18, 0.36, 0.72, 0.9], len: 0.13, every_ms: 3000},
    medium: {hz: 700, pulses: [0, 0.25, 0.5], len: 0.18, every_ms: 8000},
    low: {hz: 500, pulses: [0, 0.35], len: 0.2, every_ms: 20000}
  };

  function now() { return Date.now(); }
  function setText(el, text) {
    var n = el.firstChild;
    if (n && n.nodeType === 3 && !n.nextSibling) { if (n.nodeValue !== text) { n.nodeValue = text; } }
    else { el.textContent = text; }
  }
  function fmtAge(s) {
    if (s < 0) { s = 0; }
    if (s < 90) { return Math.floor(s) + " s"; }
    if (s < 5400) { return Math.floor(s / 60) + " min"; }
    return Math.floor(s / 3600) + " h";
  }
  function fmtVal(m, v) { return (v === null || v === undefined) ? "--" : (m === "temp" ? v.toFixed(1) : String(Math.round(v))); }
  function esc(s) { return String(s === undefined || s === null ? "" : s).replace(/[&<>"']/g, function (c) { return "&#" + c.charCodeAt(0) + ";"; }); }
  function hhmmss(ms) { var d = new Date(ms); return d.toTimeString().slice(0, 8); }

  // ---------------------------------------------------------------- DOM index
  function index() {
    var idx = {rooms: {}, alerts: [], trends: []};
    var els = document.querySelectorAll("[data-vw-room]");
    for (var i = 0; i < els.length; i++) {
      var el = els[i], room = el.getAttribute("data-vw-room"), part = el.getAttribute("data-vw-part");
      var r = idx.rooms[room] || (idx.rooms[room] = {value: {}, age: {}, phase: [], devices: [], spark: [], tile: []});
      var m = el.getAttribute("data-vw-metric");
      if (part === "value" || part === "age") { (r[part][m] || (r[part][m] = [])).push(el); }
      else if (r[part]) { r[part].push(el); }
    }
    idx.alerts = Array.prototype.slice.call(document.querySelectorAll("[data-vw-alerts]"));
    idx.reminders = Array.prototype.slice.call(document.querySelectorAll("[data-vw-reminders]"));
    idx.trends = Array.prototype.slice.call(document.querySelectorAll("[data-vw-trend]"));
    VW.idx = idx;
    applyAll();
  }
  var reindexPending = false;
  function scheduleIndex() {
    if (reindexPending) { return; }
    reindexPending = true;
    setTimeout(function () { reindexPending = false; index(); }, 30);
  }
  new MutationObserver(function (muts) {
    for (var i = 0; i < muts.length; i++) {
      var added = muts[i].addedNodes;
      for (var j = 0; j < added.length; j++) {
        var n = added[j];
        if (n.nodeType === 1 && (n.matches("[data-vw-room],[data-vw-alerts],[data-vw-trend],[data-vw-reminders]") ||
            n.querySelector("[data-vw-room],[data-vw-alerts],[data-vw-trend],[data-vw-reminders]"))) { scheduleIndex(); return; }
      }
    }
  }).observe(document.documentElement, {childList: true, subtree: true});

  // ---------------------------------------------------------------- applying state
  function staleAfterS(m, dev) {
    if (NIBP[m]) { return ((VW.cfg.nibp_cycle_s || {})[dev] || 300) + 60; }
    return VW.cfg.stale_s || 5;
  }
  function applyValue(room, m, x) {
    var r = VW.idx && VW.idx.rooms[room];
    if (!r) { return; }
    var els = r.value[m];
    if (!els) { return; }
    for (var i = 0; i < els.length; i++) {
      setText(els[i], fmtVal(m, x ? x.v : null));
      els[i].setAttribute("data-vw-ts", x ? String(x.ts) : "0");
      if (x) { els[i].setAttribute("data-vw-stale", "0"); }
    }
  }
  function tickAges() {
    if (!VW.idx) { return; }
    var t = now();
    for (var room in VW.idx.rooms) {
      var r = VW.idx.rooms[room], st = VW.rooms[room] || {latest: {}};
      for (var m in r.value) {
        var x = st.latest ? st.latest[m] : null, els = r.value[m];
        var ts = x ? x.ts : parseInt(els[0].getAttribute("data-vw-ts") || "0", 10);
        var stale = !ts || (t - ts) / 1000 > staleAfterS(m, x && x.dev);
        for (var i = 0; i < els.length; i++) {
          var s = stale ? "1" : "0";
          if (els[i].getAttribute("data-vw-stale") !== s) { els[i].setAttribute("data-vw-stale", s); }
        }
      }
      for (var am in r.age) {
        var ax = st.latest ? st.latest[am] : null;
        for (var k = 0; k < r.age[am].length; k++) {
          var tsA = ax ? ax.ts : 0;
          if (!tsA) {
            var v = r.value[am] && r.value[am][0];
            tsA = v ? parseInt(v.getAttribute("data-vw-ts") || "0", 10) : 0;
          }
          setText(r.age[am][k], tsA ? fmtAge((t - tsA) / 1000) : "no data");
          r.age[am][k].setAttribute("data-vw-stale", (tsA && (t - tsA) / 1000 > staleAfterS(am, ax && ax.dev)) ? "1" : "0");
        }
      }
      if (st.session !== undefined) { applyPhase(room); }
    }
  }
  function phaseOf(s, t) {
    if (!s) { return ["none", "no session"]; }
    if (s.state === "ended" || s.state === "archived") { return ["ended", "session ended"]; }
    if (s.ready_ms) { return ["ready", "ready to leave"]; }
    if (!s.first_dose_ms) { return ["pre-dose", "pre-dose"]; }
    return ["post-dose", Math.max(0, Math.floor((t - s.first_dose_ms) / 60000)) + " min since dose"];
  }
  function applyPhase(room) {
    var r = VW.idx && VW.idx.rooms[room];
    if (!r) { return; }
    var p = phaseOf((VW.rooms[room] || {}).session, now());
    for (var i = 0; i < r.phase.length; i++) {
      setText(r.phase[i], p[1]);
      r.phase[i].className = "vw-phase vw-phase-" + p[0];
    }
  }
  function applyDevices(room) {
    var r = VW.idx && VW.idx.rooms[room], devs = (VW.rooms[room] || {}).devices || {};
    if (!r) { return; }
    var html = "";
    for (var d in devs) { html += '<span class="vw-dev vw-dev-' + esc(devs[d].state) + '" title="' + esc(devs[d].detail) + '">' + esc(d) + " " + esc(devs[d].state) + "</span>"; }
    for (var i = 0; i < r.devices.length; i++) { if (r.devices[i].innerHTML !== html) { r.devices[i].innerHTML = html; } }
  }
  function highest(alerts) {
    var best = null;
    for (var i = 0; i < alerts.length; i++) {
      var p = alerts[i].priority;
      if (best === null || PRIO[p] < PRIO[best]) { best = p; }
    }
    return best;
  }
  function applyTile(room) {
    var r = VW.idx && VW.idx.rooms[room];
    if (!r) { return; }
    var level = highest((VW.rooms[room] || {}).alerts || []) || "none";
    for (var i = 0; i < r.tile.length; i++) {
      if (r.tile[i].getAttribute("data-alert") !== level) { r.tile[i].setAttribute("data-alert", level); }
    }
  }
  function allAlerts(room) {
    var out = [];
    for (var rm in VW.rooms) {
      if (room !== "*" && rm !== room) { continue; }
      var a = VW.rooms[rm].alerts || [];
      for (var i = 0; i < a.length; i++) { out.push(a[i]); }
    }
    out.sort(function (x, y) { return (PRIO[x.priority] - PRIO[y.priority]) || ((y.raised_ms || 0) - (x.raised_ms || 0)); });
    return out;
  }
  function alertRow(a) {
    var t = now(), paused = (a.paused_until_ms || 0) > t;
    var name = (VW.cfg.rooms || {})[a.room] || a.room;
    var val = (a.value !== undefined && a.value !== null && a.value !== "") ? " · " + esc(a.value) + (a.limit !== undefined && a.limit !== null && a.limit !== "" ? " (limit " + esc(a.limit) + ")" : "") : "";
    var ack = a.acknowledged_by ? '<span class="vw-ackby">acknowledged by ' + esc(a.acknowledged_by) + "</span>" : "";
    var pz = paused ? '<span class="vw-paused">audio paused until ' + hhmmss(a.paused_until_ms) + "</span>" : "";
    var latched = a.state === "latched" ? '<span class="vw-latched">latched</span>' : "";
    return '<div class="vw-alert vw-alert-' + esc(a.priority) + '" data-alert-id="' + esc(a.alert) + '" data-room="' + esc(a.room) + '">' +
      '<span class="vw-pri">' + esc((a.priority || "").toUpperCase()) + "</span>" +
      '<a class="vw-alertroom" href="/room/' + encodeURIComponent(a.room) + '">' + esc(name) + "</a>" +
      '<span class="vw-msg">' + esc(a.message) + val + "</span>" +
      '<span class="vw-when">' + hhmmss(a.raised_ms || t) + "</span>" + latched + ack + pz +
      (a.acknowledged_by ? "" : '<button class="vw-ack" data-act="acknowledge">Acknowledge</button>') +
      '<button class="vw-pause" data-act="pause">Pause audio</button></div>';
  }
  function applyAlertLists() {
    if (!VW.idx) { return; }
    for (var i = 0; i < VW.idx.alerts.length; i++) {
      var el = VW.idx.alerts[i], which = el.getAttribute("data-vw-alerts");
      var list = allAlerts(which);
      var html = list.length ? list.map(alertRow).join("") : '<div class="vw-noalerts">No active alerts</div>';
      if (el.__vwHtml !== html) { el.__vwHtml = html; el.innerHTML = html; }
    }
    applyReminders();
  }
  // A room's reminder alerts (kind "reminder") beside the session controls (room page);
  // the same markup as dashboard/session_panel.py reminders_list.
  function applyReminders() {
    var els = (VW.idx && VW.idx.reminders) || [];
    for (var i = 0; i < els.length; i++) {
      var el = els[i], room = el.getAttribute("data-vw-reminders"), st = VW.rooms[room];
      if (!st) { continue; }
      var rem = (st.alerts || []).filter(function (a) { return a.kind === "reminder"; });
      var html = rem.length ? rem.map(function (a) {
        return '<div class="vw-reminder" data-alert-id="' + esc(a.alert) + '">' + esc(a.message) + "</div>";
      }).join("") : '<div class="vw-noalerts">No reminders.</div>';
      if (el.__vwHtml !== html) { el.__vwHtml = html; el.innerHTML = html; }
    }
  }
  function applyAll() {
    for (var room in VW.rooms) {
      var st = VW.rooms[room];
      for (var m in st.latest) { applyValue(room, m, st.latest[m]); }
      applyDevices(room); applyTile(room); applyPhase(room); VW.sparkDirty[room] = true;
    }
    applyAlertLists(); tickAges(); drawSparks();
  }

  // ---------------------------------------------------------------- sparklines (SVG, throttled)
  function drawSparks() {
    if (!VW.idx) { return; }
    var t = now(), t0 = t - 15 * 60000;
    for (var room in VW.sparkDirty) {
      var r = VW.idx.rooms[room], st = VW.rooms[room];
      if (!r || !st || !r.spark.length) { continue; }
      var svg = '<svg viewBox="0 0 300 40" preserveAspectRatio="none" class="vw-sparksvg">';
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
        svg += '<polyline fill="none" stroke="' + colors[m] + '" stroke-width="1.5" points="' + s + '"/>';
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
  function onMessage(msg) {
    VW.received++;
    var t = msg.t, st;
    if (t === "v") {
      st = VW.rooms[msg.room];
      if (!st) { return; }
      for (var m in msg.vals) {
        var cur = st.latest[m];
        if (!cur || msg.ts >= cur.ts) {
          st.latest[m] = {v: msg.vals[m], ts: msg.ts, dev: msg.dev};
          applyValue(msg.room, m, st.latest[m]);
        }
      }
      sparkAdd(msg.room, msg.ts, msg.vals);
      trendAdd(msg.room, msg.ts, msg.vals);
    } else if (t === "hello") {
      VW.rooms = msg.rooms; VW.mon = msg.mon; VW.user = msg.user; VW.cfg = msg.cfg || VW.cfg;
      if (!VW.idx) { index(); } else { applyAll(); }
    } else if (t === "alerts") {
      st = VW.rooms[msg.room]; if (!st) { return; }
      st.alerts = msg.alerts; applyTile(msg.room); applyAlertLists(); soundTick();
    } else if (t === "dev") {
      st = VW.rooms[msg.room]; if (!st) { return; }
      st.devices = msg.devices; applyDevices(msg.room);
    } else if (t === "sess") {
      st = VW.rooms[msg.room]; if (!st) { return; }
      st.session = msg.session; applyPhase(msg.room);
    } else if (t === "mon") {
      VW.mon = msg; banner();
    } else if (t === "logout") {
      window.location.href = "/login?expired=1&next=" + encodeURIComponent(location.pathname);
    }
  }
  var backoff = 500;
  function connect() {
    var ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/live");
    VW.ws = ws;
    ws.onopen = function () { VW.connected = true; backoff = 500; reportScreen(); };
    ws.onmessage = function (ev) {
      VW.lastMsgMs = now();
      var data = JSON.parse(ev.data);
      if (Array.isArray(data)) { for (var i = 0; i < data.length; i++) { onMessage(data[i]); } } else { onMessage(data); }
    };
    ws.onclose = function (ev) {
      VW.connected = false; banner();
      if (ev.code === 4401 || ev.code === 4403) { window.location.href = "/login?next=" + encodeURIComponent(location.pathname); return; }
      setTimeout(connect, backoff); backoff = Math.min(backoff * 2, 4000);
    };
  }
  function send(obj) { if (VW.ws && VW.ws.readyState === 1) { VW.ws.send(JSON.stringify(obj)); } }

  // ---------------------------------------------------------------- NOT MONITORING banner
  function banner() {
    var el = document.getElementById("vw-banner");
    if (!el) {
      el = document.createElement("div"); el.id = "vw-banner"; el.className = "vw-banner";
      document.body.insertBefore(el, document.body.firstChild);
    }
    var reasons = [];
    if (!VW.connected || now() - VW.lastMsgMs > LOST_AFTER_MS) { reasons.push("connection to the server lost"); }
    else if (VW.mon && !VW.mon.ok) { reasons = VW.mon.reasons || ["unknown"]; }
    var text = reasons.length ? "NOT MONITORING — " + reasons.join("; ") : "";
    if (el.__vwText !== text) {
      el.__vwText = text; el.textContent = text;
      el.style.display = text ? "block" : "none";
      document.documentElement.classList.toggle("vw-not-monitoring", !!text);
    }
  }

  // ---------------------------------------------------------------- sound
  function soundOn() { return !!(VW.audio.ctx && VW.audio.ctx.state === "running" && !VW.audio.muted); }
  function beep(spec) {
    var ctx = VW.audio.ctx, t0 = ctx.currentTime + 0.02;
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
  function audibleAlerts() {
    var t = now(), out = [];
    for (var room in VW.rooms) {
      var a = VW.rooms[room].alerts || [];
      for (var i = 0; i < a.length; i++) {
        if (!a[i].acknowledged_by && !((a[i].paused_until_ms || 0) > t)) { out.push(a[i]); }
      }
    }
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
    var on = soundOn(), label = on ? "Sound on" : "SOUND OFF — click to start monitoring";
    if (b.textContent !== label) { b.textContent = label; b.className = "vw-sound " + (on ? "vw-sound-on" : "vw-sound-off"); }
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
  function stationPrompt(alertId, act) {
    var old = document.getElementById("vw-modal");
    if (old) { old.remove(); }
    var m = document.createElement("div");
    m.id = "vw-modal"; m.className = "vw-modal";
    m.innerHTML = '<form class="vw-modalbox"><h3>' + (act === "acknowledge" ? "Acknowledge" : "Pause audio") +
      ' — who is acting?</h3><label>Nurse user name<input name="username" id="vw-ack-user" autocomplete="off"></label>' +
      '<label>Password<input name="password" id="vw-ack-pass" type="password" autocomplete="off"></label>' +
      '<div class="vw-modalmsg" id="vw-ack-msg"></div><button type="submit" id="vw-ack-submit">Confirm</button> ' +
      '<button type="button" id="vw-ack-cancel">Cancel</button></form>';
    document.body.appendChild(m);
    m.querySelector("#vw-ack-user").focus();
    m.querySelector("#vw-ack-cancel").onclick = function () { m.remove(); };
    m.querySelector("form").onsubmit = function (ev) {
      ev.preventDefault();
      var creds = {username: m.querySelector("#vw-ack-user").value, password: m.querySelector("#vw-ack-pass").value};
      postAction(alertId, act, creds).then(function (res) {
        if (res.status === 200) { m.remove(); actionDone(res.body); }
        else { m.querySelector("#vw-ack-msg").textContent = res.body.detail || res.body.error || ("refused (" + res.status + ")"); }
      });
    };
  }
  function actionDone(alert) {
    if (!alert || !alert.room || !VW.rooms[alert.room]) { return; }
    var list = VW.rooms[alert.room].alerts || [];
    for (var i = 0; i < list.length; i++) { if (list[i].alert === alert.alert) { list[i] = alert; } }
    applyTile(alert.room); applyAlertLists(); soundTick();
  }
  document.addEventListener("click", function (ev) {
    var t = ev.target;
    if (t.id === "app-sound") { startAudio(); return; }
    var act = t.getAttribute && t.getAttribute("data-act");
    if (!act) { return; }
    var row = t.closest("[data-alert-id]");
    if (!row) { return; }
    var id = row.getAttribute("data-alert-id");
    if (VW.user && VW.user.role === "station") { stationPrompt(id, act); return; }
    postAction(id, act).then(function (res) { if (res.status === 200) { actionDone(res.body); } });
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
  function blink() {
    var t = now(), root = document.documentElement;
    for (var p in BLINK_HALF_MS) {
      var on = Math.floor(t / BLINK_HALF_MS[p]) % 2 ? "1" : "0";
      if (root.getAttribute("data-blink-" + p) !== on) { root.setAttribute("data-blink-" + p, on); }
    }
  }
  VW.blinkHalfMs = BLINK_HALF_MS;

  // ---------------------------------------------------------------- timers
  setInterval(function () { tickAges(); banner(); soundButton(); flushTrends(); }, 1000);
  setInterval(function () { banner(); soundTick(); }, 250);
  setInterval(blink, 50);
  setInterval(drawSparks, 5000);
  setInterval(function () { if (soundOn() !== lastSoundReport) { reportScreen(); } }, 1000);
  setInterval(reportScreen, 5000);
  connect();
})();
