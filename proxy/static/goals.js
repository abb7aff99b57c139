/* Kairos goals: reports clicks on the experiments' goal selectors, and custom events the
   site sends with kairos.track(name, value), to Kairos's own endpoint. Injected only for
   visitors who are in an experiment with such goals; no cookies of its own, no network
   other than the same-origin beacon. */
(function () {
  "use strict";
  var me = document.currentScript;
  if (!me) { return; }
  var endpoint = me.getAttribute("data-endpoint");
  var token = me.getAttribute("data-token");
  var clicks = [];
  try { clicks = JSON.parse(me.getAttribute("data-clicks") || "[]"); } catch (e) { clicks = []; }
  var reported = {};

  function send(body) {
    body.token = token;
    var data = JSON.stringify(body);
    try {
      if (navigator.sendBeacon &&
          navigator.sendBeacon(endpoint, new Blob([data], { type: "application/json" }))) {
        return;
      }
    } catch (e) { /* fall back to fetch */ }
    if (window.fetch) {
      window.fetch(endpoint, { method: "POST", body: data, keepalive: true,
                               credentials: "same-origin",
                               headers: { "content-type": "application/json" } })
        .catch(function () {});
    }
  }

  document.addEventListener("click", function (event) {
    var target = event.target;
    if (!target || !target.closest) { return; }
    for (var i = 0; i < clicks.length; i++) {
      var selector = clicks[i];
      if (reported[selector]) { continue; }
      try {
        if (target.closest(selector)) { reported[selector] = true; send({ click: selector }); }
      } catch (e) { /* a selector this browser does not support */ }
    }
  }, true);

  var queued = (window.kairos && window.kairos.queue) || [];
  window.kairos = {
    track: function (name, value) {
      var body = { event: String(name) };
      if (typeof value === "number" && isFinite(value)) { body.value = value; }
      send(body);
    }
  };
  for (var j = 0; j < queued.length; j++) { window.kairos.track(queued[j][0], queued[j][1]); }
})();
