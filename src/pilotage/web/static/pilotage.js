/* pilotage pages: draw the plots from the page's JSON block, and keep the page live by
   fetching it again and swapping its regions. No inline code (the CSP forbids it). */
(function () {
  "use strict";

  // Okabe-Ito colours: apart for colour-blind readers, dark enough on white.
  var PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#8C6D1F", "#6A3D9A"];
  var charts = {};

  function two(n) { return (n < 10 ? "0" : "") + n; }

  function timeLabel(epoch) {
    var d = new Date(epoch * 1000);
    return two(d.getUTCHours()) + ":" + two(d.getUTCMinutes());
  }

  function chartData(doc) {
    var block = doc.getElementById("chart-data");
    if (!block) { return {}; }
    try { return JSON.parse(block.textContent); } catch (e) { return {}; }
  }

  function config(spec) {
    var labels = spec.x ? spec.x.map(timeLabel) : spec.labels;
    var line = spec.kind === "line";
    var datasets = spec.series.map(function (s, i) {
      var colour = PALETTE[i % PALETTE.length];
      return {
        label: s.label,
        data: s.data,
        borderColor: colour,
        backgroundColor: line ? colour + "33" : colour,
        borderWidth: line ? 2 : 0,
        fill: line && !!spec.stacked,
        pointRadius: line && s.data.length > 30 ? 0 : 2,
        stepped: false,
        tension: 0
      };
    });
    return {
      type: spec.kind,
      data: { labels: labels, datasets: datasets },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { stacked: !!spec.stacked, ticks: { maxTicksLimit: 8, autoSkip: true } },
          y: { stacked: !!spec.stacked, beginAtZero: true, title: { display: true, text: spec.y } }
        },
        plugins: { legend: { position: "bottom" } }
      }
    };
  }

  function draw(data) {
    if (typeof window.Chart === "undefined") { return; }
    var canvases = document.querySelectorAll("canvas[data-chart]");
    Array.prototype.forEach.call(canvases, function (canvas) {
      var name = canvas.getAttribute("data-chart");
      var spec = data[name];
      if (!spec) { return; }
      var chart = charts[name];
      if (!chart) {
        charts[name] = new window.Chart(canvas, config(spec));
        return;
      }
      var fresh = config(spec);
      chart.data.labels = fresh.data.labels;
      chart.data.datasets = fresh.data.datasets;
      chart.update("none");
    });
  }

  function swap(doc) {
    var regions = document.querySelectorAll("[data-region][id]");
    Array.prototype.forEach.call(regions, function (region) {
      var fresh = doc.getElementById(region.id);
      if (!fresh || fresh.innerHTML === region.innerHTML) { return; }
      // Leave alone what the reader is on: keyboard focus must not jump away.
      if (region.contains(document.activeElement) && document.activeElement !== document.body) { return; }
      region.innerHTML = fresh.innerHTML;
    });
  }

  function live() {
    var main = document.querySelector("main[data-live]");
    var button = document.getElementById("live-toggle");
    if (!main || !button || typeof window.fetch !== "function") { return; }
    var every = Math.max(5, parseInt(main.getAttribute("data-live"), 10) || 10) * 1000;
    var on = true;
    var busy = false;

    function refresh() {
      if (!on || busy || document.hidden) { return; }
      busy = true;
      window.fetch(window.location.href, {
        credentials: "same-origin",
        headers: { "X-Pilotage-Refresh": "1" },
        redirect: "manual"
      }).then(function (response) {
        if (response.type === "opaqueredirect" || response.status === 401) {
          setLive(false, "Live updates: stopped (signed out)");
          return null;
        }
        return response.ok ? response.text() : null;
      }).then(function (html) {
        if (!html) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        swap(doc);
        draw(chartData(doc));
      }).catch(function () {
        /* the server is away for a moment: the next turn tries again */
      }).then(function () { busy = false; });
    }

    function setLive(value, text) {
      on = value;
      button.setAttribute("aria-pressed", value ? "true" : "false");
      button.textContent = text || (value ? "Live updates: on" : "Live updates: paused");
    }

    button.addEventListener("click", function () { setLive(!on); if (on) { refresh(); } });
    window.setInterval(refresh, every);
  }

  function start() {
    draw(chartData(document));
    live();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}());
