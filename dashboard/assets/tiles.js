/* VitalWatch overview tiles: built here, in plain DOM, from the push socket's state — not as
   Dash components (4,000 React components took 40 s to show 100 rooms). One tile per room
   in config order; live.js fills values, ages, alarms, reminders and devices through the
   same data attributes the room page uses.

   Layout: the grid is sized to fill what is left of the window beside (or, on narrow
   screens, under) the alarm list. The number of columns is chosen so the tiles' numerals
   are as large as possible; the tile's own size sets every font (CSS container units), so
   values shrink before anything is cut. Past ~40 rooms, tiles keep a readable minimum and
   the grid scrolls. At phone width (or on /m) the rooms become compact full-width rows
   under the alarms. */
(function () {
  "use strict";
  var VW = window.VW;
  if (!VW || VW.tiles) { return; }
  var PHONE_MAX_PX = 700;
  var MIN_BIG_PX = 18;        // below this numeral size the grid scrolls instead of shrinking
  var GAP_PX = 8;
  var TILE_EDGE_PX = 12;      // a tile's borders: its content box (what its fonts scale with) is this much smaller
  // tile height and width in units of its numeral size (see .vw-tile in style.css)
  var H_PER_BIG = 5.5, W_PER_BIG = 7.0;
  var CELLS = [["hr", "HR", "/min"], ["spo2", "SpO₂", "%"], ["rr", "RR", "/min"]];
  var built = null;           // the room order the grid was built for

  function el(tag, cls, attrs, text) {
    var e = document.createElement(tag);
    e.__vwOwn = true;
    if (cls) { e.className = cls; }
    for (var k in attrs || {}) { e.setAttribute(k, attrs[k]); }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }
  function part(tag, cls, room, name, metric, text) {
    var a = {"data-vw-room": room, "data-vw-part": name};
    if (metric) { a["data-vw-metric"] = metric; }
    return el(tag, cls, a, text);
  }
  function value(room, metric, cls) {
    var v = part("span", "vw-num " + (cls || "vw-big"), room, "value", metric, "--");
    v.setAttribute("role", "img");
    v.setAttribute("aria-label", metric + " no data");
    return v;
  }
  function cellHead(room, label, unit, ageMetric) {
    var h = el("div", "vw-cellhead");
    h.appendChild(el("span", "vw-label", null, label));
    h.appendChild(el("span", "vw-unit", null, unit));
    h.appendChild(part("span", "vw-age", room, "age", ageMetric, "no data"));
    return h;
  }
  function tile(room, name) {
    var t = el("article", "vw-tile", {"data-vw-room": room, "data-vw-part": "tile", "data-alert": "none",
                                      "aria-label": name, id: "ov-tile-" + room});
    var band = el("header", "vw-band");
    var link = el("a", "vw-roomname", {href: "/room/" + encodeURIComponent(room)}, name);
    band.appendChild(link);
    band.appendChild(part("span", "vw-phase", room, "phase", null, ""));
    t.appendChild(band);
    t.appendChild(part("div", "vw-notmon", room, "notmon", null, ""));
    var bp = el("div", "vw-cell vw-cell-bp");
    bp.appendChild(cellHead(room, "BP", "mmHg", "sbp"));
    var bpv = el("div", "vw-cellval");
    bpv.appendChild(value(room, "sbp"));
    bpv.appendChild(el("span", "vw-sep vw-big", {"aria-hidden": "true"}, "/"));
    bpv.appendChild(value(room, "dbp"));
    var map = el("span", "vw-map");
    map.appendChild(el("span", "vw-sep", {"aria-hidden": "true"}, "("));
    map.appendChild(value(room, "map", "vw-mid"));
    map.appendChild(el("span", "vw-sep", {"aria-hidden": "true"}, ")"));
    bpv.appendChild(map);
    bp.appendChild(bpv);
    var row = el("div", "vw-row3");
    CELLS.forEach(function (c) {
      var cell = el("div", "vw-cell vw-cell-" + c[0]);
      cell.appendChild(cellHead(room, c[1], c[2], c[0]));
      var v = el("div", "vw-cellval");
      v.appendChild(value(room, c[0]));
      cell.appendChild(v);
      row.appendChild(cell);
    });
    var vitals = el("div", "vw-vitals");
    vitals.appendChild(bp);
    vitals.appendChild(row);
    t.appendChild(vitals);
    var foot = el("div", "vw-foot");
    foot.appendChild(part("div", "vw-chips", room, "chips", null));
    foot.appendChild(part("div", "vw-devices", room, "devices", null));
    t.appendChild(foot);
    t.appendChild(part("div", "vw-spark", room, "spark", null));
    return t;
  }

  function grid() { return document.querySelector("[data-vw-grid]"); }
  function overview() { return document.querySelector("[data-vw-overview]"); }
  function phoneMode() {
    var ov = overview();
    return !!ov && (ov.getAttribute("data-vw-mode") === "phone" || window.innerWidth <= PHONE_MAX_PX);
  }

  function build() {
    var g = grid();
    if (!g || !VW.cfg || !VW.cfg.order) { return false; }
    var key = VW.cfg.order.join(",");
    if (built === key && g.__vwBuilt) { return false; }
    var frag = document.createDocumentFragment();
    VW.cfg.order.forEach(function (room) { frag.appendChild(tile(room, VW.cfg.rooms[room] || room)); });
    g.textContent = "";
    g.appendChild(frag);
    g.__vwBuilt = true;
    built = key;
    layout();
    return true;
  }

  // Columns that make the numerals largest for n tiles in w×h; {cols, rowH, big}.
  function bestGrid(n, w, h) {
    var best = {cols: 1, rowH: h, big: 0};
    for (var c = 1; c <= n; c++) {
      var r = Math.ceil(n / c), tw = (w - GAP_PX * (c - 1)) / c, th = (h - GAP_PX * (r - 1)) / r;
      var big = Math.min((th - TILE_EDGE_PX) / H_PER_BIG, (tw - TILE_EDGE_PX) / W_PER_BIG);
      if (big > best.big) { best = {cols: c, rowH: th, big: big}; }
    }
    if (best.big < MIN_BIG_PX) {  // too many rooms to fit: readable tiles, vertical scroll
      var cols = Math.max(1, Math.floor((w + GAP_PX) / (MIN_BIG_PX * W_PER_BIG + TILE_EDGE_PX + GAP_PX)));
      best = {cols: cols, rowH: MIN_BIG_PX * H_PER_BIG + TILE_EDGE_PX, big: MIN_BIG_PX, scroll: true};
    }
    return best;
  }
  VW.bestGrid = bestGrid;

  function layout() {
    var g = grid(), ov = overview();
    if (!g || !ov) { return; }
    var phone = phoneMode();
    ov.setAttribute("data-vw-layout", phone ? "phone" : "station");
    var n = (VW.cfg.order || []).length || 1;
    if (phone) {
      g.style.gridTemplateColumns = "1fr";
      g.style.gridAutoRows = "auto";
      g.style.height = "";
      return;
    }
    var top = g.getBoundingClientRect().top + window.scrollY;
    var page = g.closest(".vw-page"), below = page ? parseFloat(getComputedStyle(page).paddingBottom) || 0 : 0;
    var h = Math.max(200, window.innerHeight - top - below - 2), w = g.clientWidth;
    var b = bestGrid(n, w, h);
    g.style.gridTemplateColumns = "repeat(" + b.cols + ", minmax(0, 1fr))";
    g.style.gridAutoRows = Math.floor(b.rowH) + "px";
    g.style.height = b.scroll ? "" : Math.floor(h) + "px";
    g.setAttribute("data-vw-cols", String(b.cols));
  }

  var resizePending = false;
  function onResize() {
    if (resizePending) { return; }
    resizePending = true;
    requestAnimationFrame(function () { resizePending = false; layout(); });
  }
  window.addEventListener("resize", onResize);

  function tryBuild() {
    if (build()) { VW.reindex(); }
  }
  VW.tiles = {build: tryBuild, layout: layout, tile: tile};
  VW.hooks.push({hello: tryBuild, added: function () { built = null; setTimeout(tryBuild, 0); }, resize: onResize});
  if (VW.cfg && VW.cfg.order && VW.cfg.order.length) { tryBuild(); }
})();
