/* Accessibility repairs for Dash 4's own components, which this app cannot configure (they
   take no aria-* props). Found by axe-core (tests/test_accessibility_browser.py):
   - RadioItems / Checklist render role="listbox" with role="option" labels around real radio
     and checkbox inputs: a listbox without a name, interactive controls nested in options.
     The native inputs are accessible by themselves: the roles go, the group gets a name.
   - Dropdown's keyboard focus target is an input that is focusable but aria-hidden; it gets
     un-hidden and a name ("Route: intranasal").
   - DatePickerRange's wrapper carries popup ARIA on a plain div, labelled by ids that do not
     exist; its inputs are labelled themselves, so those attributes go; its clear control
     gets a button role.
   Names come from the nearest ancestor's data-vw-label (set by the page), else the id.
   Runs after every change to the page (MutationObserver, at most once per frame). */
(function () {
  "use strict";
  function nameFor(el) {
    var w = el.closest("[data-vw-label]");
    if (w) { return w.getAttribute("data-vw-label"); }
    var id = el.id || (el.parentElement && el.parentElement.id) || "";
    return id.replace(/^[a-z]+-/, "").replace(/-/g, " ") || "options";
  }
  function repair() {
    var i, els = document.querySelectorAll(".dash-options-list[role=listbox]");
    for (i = 0; i < els.length; i++) {
      var list = els[i];
      list.setAttribute("role", list.classList.contains("dash-radioitems") ? "radiogroup" : "group");
      if (!list.hasAttribute("aria-label")) { list.setAttribute("aria-label", nameFor(list)); }
    }
    els = document.querySelectorAll(".dash-options-list-option[role=option]");
    for (i = 0; i < els.length; i++) { els[i].removeAttribute("role"); els[i].removeAttribute("aria-selected"); }
    els = document.querySelectorAll(".dash-dropdown-focus-target[aria-hidden=true]");
    for (i = 0; i < els.length; i++) {
      var t = els[i], btn = t.parentElement && t.parentElement.querySelector("button.dash-dropdown");
      t.removeAttribute("aria-hidden");
      t.setAttribute("aria-label", nameFor(t) + (btn ? ": " + btn.textContent.trim() : ""));
      t.setAttribute("aria-haspopup", "listbox");
    }
    els = document.querySelectorAll(".dash-datepicker-input-wrapper[aria-haspopup]");
    for (i = 0; i < els.length; i++) {
      ["aria-haspopup", "aria-expanded", "aria-disabled", "aria-labelledby", "type"].forEach(function (a) {
        els[i].removeAttribute(a);
      });
    }
    els = document.querySelectorAll(".dash-datepicker-clear:not([role])");
    for (i = 0; i < els.length; i++) { els[i].setAttribute("role", "button"); }
  }
  var pending = false;
  new MutationObserver(function () {
    if (pending) { return; }
    pending = true;
    requestAnimationFrame(function () { pending = false; repair(); });
  }).observe(document.documentElement, {childList: true, subtree: true, attributes: true,
                                         attributeFilter: ["role", "aria-hidden", "aria-haspopup"]});
})();
