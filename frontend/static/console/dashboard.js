// Draw the dashboard's charts with plotly.js (served from the plotly wheel, never a CDN).
(function () {
  const data = JSON.parse(document.getElementById("chart-data").textContent);
  const layout = { margin: { l: 40, r: 10, t: 10, b: 60 }, autosize: true, font: { size: 11 } };
  const config = { displayModeBar: false, responsive: true };
  function empty(id, text) {
    document.getElementById(id).innerHTML = '<p class="text-body-secondary small p-3 m-0">' + text + "</p>";
  }
  if (data.mailboxes.length) {
    Plotly.newPlot("chart-mailboxes", [{ type: "bar", x: data.mailboxes.map(r => r[0]), y: data.mailboxes.map(r => r[1]),
      marker: { color: "#0d6efd" } }], layout, config);
  } else {
    empty("chart-mailboxes", "No local domains yet.");
  }
  Plotly.newPlot("chart-logons", [{ type: "scatter", mode: "lines+markers", x: data.logons.map(r => r[0]),
    y: data.logons.map(r => r[1]), line: { color: "#198754" } }],
    Object.assign({}, layout, { yaxis: { rangemode: "tozero", tickformat: "d" } }), config);
})();
