// aiodurable console: confirmations, and live updates of the part of the page marked #live.
// The server pushes "changed" through server-sent events; the page re-fetches its fragment,
// at most once per 150 ms. No timer re-fetches anything by itself.
(function () {
  "use strict";

  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) {
      event.preventDefault();
    }
  });

  var live = document.getElementById("live");
  if (!live || !window.EventSource) {
    return;
  }
  var timer = null;
  var busy = false;
  var again = false;

  function editing() {
    var active = document.activeElement;
    return active && live.contains(active) && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName);
  }

  function schedule(delay) {
    if (timer === null) {
      timer = window.setTimeout(function () {
        timer = null;
        refresh();
      }, delay);
    }
  }

  function refresh() {
    if (busy || editing()) {
      again = true;
      if (!busy) {
        schedule(1000);
      }
      return;
    }
    busy = true;
    again = false;
    fetch(live.getAttribute("data-fragment"), { credentials: "same-origin" })
      .then(function (response) {
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html !== null) {
          live.innerHTML = html;  // server-rendered, every value escaped
          live.setAttribute("data-refreshed", String(Date.now()));
        }
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) {
          schedule(150);
        }
      });
  }

  var source = new EventSource(live.getAttribute("data-events"));
  source.addEventListener("open", function () {
    document.documentElement.setAttribute("data-live", "open");
    schedule(0);  // catch up with anything that changed before the stream opened
  });
  source.addEventListener("error", function () {
    document.documentElement.setAttribute("data-live", "reconnecting");
  });
  source.addEventListener("message", function () {
    schedule(150);
  });
  window.addEventListener("pagehide", function () {
    source.close();
  });
})();
