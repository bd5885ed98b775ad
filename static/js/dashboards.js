// Glue between the dashboard panels and Chart.js: each <canvas data-chart="{spec}">
// becomes a chart; charts whose canvas an HTMX refresh removed are destroyed.
(function () {
  "use strict";

  function cssVar(name, fallback) {
    var value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return value || fallback;
  }

  function build(canvas) {
    if (typeof Chart === "undefined" || Chart.getChart(canvas)) return;
    var spec = JSON.parse(canvas.dataset.chart);
    var text = cssVar("--fg", "#1b1f24");
    var grid = cssVar("--line", "#d0d7de");
    new Chart(canvas, {
      type: spec.type,
      data: {
        labels: spec.labels,
        datasets: spec.datasets.map(function (set) {
          return {
            label: set.label, data: set.data, borderColor: set.color, backgroundColor: set.color,
            borderWidth: 2, pointRadius: 2, spanGaps: false,
          };
        }),
      },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        plugins: { legend: { labels: { color: text } } },
        scales: {
          x: { title: { display: true, text: spec.x_label, color: text }, ticks: { color: text, maxRotation: 0, autoSkip: true }, grid: { color: grid } },
          y: { beginAtZero: true, max: spec.y_max, title: { display: true, text: spec.y_label, color: text }, ticks: { color: text, precision: spec.y_integer ? 0 : undefined }, grid: { color: grid } },
        },
      },
    });
  }

  function refresh() {
    if (typeof Chart === "undefined") return;
    Object.values(Chart.instances).forEach(function (chart) {
      if (!chart.canvas.isConnected) chart.destroy();
    });
    document.querySelectorAll("canvas[data-chart]").forEach(build);
  }

  // A panel's poll skips its turn while the keyboard focus is inside a panel
  // (a refresh would take the focus away). A listener, not an hx-trigger
  // filter: htmx evaluates filters as code, which the CSP refuses.
  document.addEventListener("htmx:confirm", function (event) {
    if (!event.detail.elt.hasAttribute("data-hold-while-focused")) return;
    var active = document.activeElement;
    if (active && active.closest(".panel")) event.preventDefault();
  });

  document.addEventListener("DOMContentLoaded", refresh);
  document.addEventListener("htmx:afterSettle", refresh);
})();
