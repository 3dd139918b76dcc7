// The editor's desk: live progress of a send. The page works without it; this only keeps it current.
(function () {
  "use strict";
  var box = document.getElementById("progress");
  if (!box || !box.dataset.live) { return; }
  var url = box.dataset.progressUrl;
  var bar = document.getElementById("progress-bar");
  var text = document.getElementById("progress-text");
  var chart = document.getElementById("rate-chart");
  var line = chart.querySelector("polyline");
  var rateText = document.getElementById("rate-text");
  var waiting = document.getElementById("progress-waiting");
  var samples = [];  // [seconds, sent] pairs, at most the last 120
  var POLL_MS = 1000;

  // The page's words, in its language: data- attributes with {name} where a value goes.
  function fill(words, values) {
    return words.replace(/\{(\w+)\}/g, function (whole, name) {
      return Object.prototype.hasOwnProperty.call(values, name) ? String(values[name]) : whole;
    });
  }

  function draw() {
    var rates = [];
    for (var i = 1; i < samples.length; i++) {
      var seconds = samples[i][0] - samples[i - 1][0];
      rates.push(seconds > 0 ? (samples[i][1] - samples[i - 1][1]) / seconds : 0);
    }
    if (!rates.length) { return; }
    var top = Math.max.apply(null, rates.concat([1]));
    var points = rates.map(function (rate, index) {
      var x = rates.length === 1 ? 720 : index * 720 / (rates.length - 1);
      return x.toFixed(1) + "," + (155 - rate * 150 / top).toFixed(1);
    });
    line.setAttribute("points", points.join(" "));
    chart.hidden = false;
    rateText.textContent = fill(rateText.dataset.text, { now: Math.round(rates[rates.length - 1]), peak: Math.round(top) });
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : Promise.reject(response.status); })
      .then(function (data) {
        bar.max = data.total || 1;
        bar.value = data.done;
        Object.keys(data.counts).forEach(function (status) {
          var cell = box.querySelector('[data-count="' + status + '"]');
          if (cell) { cell.textContent = data.counts[status].toLocaleString(); }
        });
        var share = data.total ? Math.floor(100 * data.done / data.total) : 100;
        var words = data.finished ? text.dataset.finished : data.running ? text.dataset.running : text.dataset.stopped;
        text.textContent = fill(words, { done: data.done.toLocaleString(), total: data.total.toLocaleString(), share: share });
        waiting.hidden = !data.waiting;
        waiting.textContent = data.waiting ? fill(waiting.dataset.text, { reason: data.waiting }) : "";
        samples.push([Date.now() / 1000, data.counts.sent]);
        if (samples.length > 120) { samples.shift(); }
        draw();
        if (!data.finished && (data.running || data.status === "sending")) { setTimeout(poll, POLL_MS); }
        else { setTimeout(function () { window.location.replace(window.location.pathname); }, POLL_MS); }  // final counts, chart
      })
      .catch(function () { setTimeout(poll, POLL_MS * 5); });
  }
  poll();
}());
