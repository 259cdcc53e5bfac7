// Draw the dashboard's charts with plotly.js (served from the plotly wheel, never a CDN).
(function () {
  const data = JSON.parse(document.getElementById("chart-data").textContent);
  const config = { displayModeBar: false, responsive: true };
  // Counts are whole numbers: one tick per unit while the numbers are small.
  function layoutFor(values) {
    const top = Math.max(1, ...values);
    return { margin: { l: 40, r: 10, t: 10, b: 60 }, autosize: true, font: { size: 11 }, bargap: 0.5,
             yaxis: { rangemode: "tozero", tickformat: "d", dtick: top <= 10 ? 1 : undefined } };
  }
  function draw(id, type, rows, color) {
    const y = rows.map(r => r[1]);
    const trace = type === "bar" ? { type: "bar", marker: { color: color } }
                                 : { type: "scatter", mode: "lines+markers", line: { color: color } };
    Plotly.newPlot(id, [Object.assign(trace, { x: rows.map(r => r[0]), y: y })], layoutFor(y), config);
  }
  if (data.mailboxes.length) {
    draw("chart-mailboxes", "bar", data.mailboxes, "#0d6efd");
  } else {
    document.getElementById("chart-mailboxes").innerHTML =
      '<p class="text-body-secondary small p-3 m-0">No local domains yet.</p>';
  }
  draw("chart-logons", "line", data.logons, "#198754");
  if (document.getElementById("chart-changes")) {
    draw("chart-changes", "bar", data.changes, "#6f42c1");
  }
})();
