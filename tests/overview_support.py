"""Measuring the overview in the browser: exact viewports, clipping, numeral sizes and WCAG
contrast of every text as rendered (used by tests/test_overview_browser.py, the screenshots
script and the overview benchmark)."""

from __future__ import annotations

import threading
import time
from typing import Any

import redis

from monitor.model.keys import Keys
from monitor.store import heartbeat
from monitor.store.status import publish_status


def viewport(driver: Any, width: int, height: int, phone: bool = False) -> None:
    """Give the page exactly width×height CSS pixels (no window chrome in the way)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": phone})


# For every tile: text that leaves its tile, text cut inside its own box, the numerals' size;
# and whether the page scrolls, where the tiles' top edges are.
LAYOUT_JS = r"""
var out = {tiles: 0, clipped: [], numeral_px: [], tops: [], scroll: 0, bottoms: [],
           vh: innerHeight, vw: innerWidth};
var tiles = document.querySelectorAll('.vw-tile');
out.tiles = tiles.length;
tiles.forEach(function (t) {
  var tr = t.getBoundingClientRect();
  out.tops.push(tr.top); out.bottoms.push(tr.bottom);
  var walker = document.createTreeWalker(t, NodeFilter.SHOW_TEXT);
  var n;
  while ((n = walker.nextNode())) {
    if (!n.nodeValue.trim()) { continue; }
    var el = n.parentElement, cs = getComputedStyle(el);
    if (cs.display === 'none' || cs.visibility === 'hidden') { continue; }
    var range = document.createRange(); range.selectNodeContents(n);
    var rs = range.getClientRects();
    for (var i = 0; i < rs.length; i++) {
      var r = rs[i];
      if (r.width === 0) { continue; }
      if (r.left < tr.left - 0.5 || r.right > tr.right + 0.5 || r.top < tr.top - 0.5 || r.bottom > tr.bottom + 0.5) {
        out.clipped.push(t.id + ': "' + n.nodeValue.trim() + '" outside its tile');
      }
    }
    if (el.scrollWidth > el.clientWidth + 1 && cs.overflow !== 'visible' && el.clientWidth > 0) {
      out.clipped.push(t.id + ': "' + n.nodeValue.trim() + '" cut in its box');
    }
  }
  var v = t.querySelector('.vw-cellval');
  if (v) { out.numeral_px.push(parseFloat(getComputedStyle(v).fontSize)); }
});
out.scroll = document.scrollingElement.scrollHeight - innerHeight;
return out;
"""

# WCAG 2 contrast of every visible text in the overview (tiles, alarm and reminder rows, the
# nav) against the first opaque background behind it; returns the worst and the failures.
CONTRAST_JS = r"""
function rgb(s) { var m = s.match(/[\d.]+/g); return m ? m.map(Number) : [0, 0, 0, 0]; }
function lum(c) {
  var a = c.slice(0, 3).map(function (v) { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
  return 0.2126 * a[0] + 0.7152 * a[1] + 0.0722 * a[2];
}
function bg(el) {
  while (el) {
    var c = rgb(getComputedStyle(el).backgroundColor);
    if (c.length < 4 || c[3] > 0.99) { return c; }
    el = el.parentElement;
  }
  return [255, 255, 255, 1];
}
var worst = 99, fails = [], n = 0, scope = arguments[0] || 'body';
document.querySelectorAll(scope).forEach(function (root) {
  var walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT), t;
  while ((t = walker.nextNode())) {
    if (!t.nodeValue.trim()) { continue; }
    var el = t.parentElement, cs = getComputedStyle(el);
    if (cs.display === 'none' || cs.visibility === 'hidden' || !el.getClientRects().length) { continue; }
    var fg = rgb(cs.color), b = bg(el), l1 = lum(fg), l2 = lum(b);
    var ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
    n++;
    if (ratio < worst) { worst = ratio; }
    if (ratio < 4.5) { fails.push('"' + t.nodeValue.trim().slice(0, 30) + '" ' + cs.color + ' on rgb(' + b.slice(0, 3) + ') ' + ratio.toFixed(2)); }
  }
});
return {worst: worst, fails: fails, texts: n};
"""


def contrast(driver: Any, scope: str, phase: str) -> dict[str, Any]:
    """Contrast of every text under `scope` with both flash phases pinned to `phase` ("0"/"1")."""
    driver.execute_script("VW.blinkHold = {high: arguments[0], medium: arguments[0]};", phase)
    time.sleep(0.15)  # the flash timer runs every 50 ms; one run applies the pinned phase
    try:
        return driver.execute_script(CONTRAST_JS, scope)
    finally:
        driver.execute_script("VW.blinkHold = null;")


class FakeIngest:
    """What a running ingest looks like from Redis: its heartbeat and its devices' status
    kept fresh every 0.5 s (stop() = the process is killed)."""

    def __init__(self, client: redis.Redis, keys: Keys, devices: dict[str, str]) -> None:
        self.client, self.keys, self.devices = client, keys, devices  # device → room
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            now = int(time.time() * 1000)
            heartbeat.beat(self.client, self.keys, "ingest", "fake", now)
            pipe = self.client.pipeline(transaction=False)
            for dev, room in self.devices.items():
                publish_status(pipe, self.keys, dev, {"room": room, "state": "online", "since_ms": now - 60_000,
                                                      "last_ts": now, "updated_ms": now})
            pipe.execute()
            self.stop_event.wait(0.5)

    def start(self) -> FakeIngest:
        """Start beating."""
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop as a killed process would: heartbeat and status just stop changing."""
        self.stop_event.set()
        self.thread.join(2)
