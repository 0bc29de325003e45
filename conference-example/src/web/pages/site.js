// The only script of the sites: the estimated total of a seat selection, the countdown to a
// reservation's expiry, and the explorer's live chart. Every page works without it.
(function () {
  function estimate() {
    var total = 0;
    document.querySelectorAll("select[data-price]").forEach(function (s) {
      total += parseFloat(s.dataset.price) * parseInt(s.value || "0", 10);
    });
    var out = document.getElementById("estimated-total");
    if (out) out.textContent = "$" + total.toFixed(2);
  }
  function tick(el) {
    var left = Math.max(0, Math.floor((Date.parse(el.dataset.expires) - Date.now()) / 1000));
    el.textContent = Math.floor(left / 60) + ":" + String(left % 60).padStart(2, "0");
    if (left === 0) {
      window.location.href = el.dataset.expiredUrl;
      return;
    }
    setTimeout(function () { tick(el); }, 1000);
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("select[data-price]").forEach(function (s) {
      s.addEventListener("change", estimate);
    });
    estimate();
    document.querySelectorAll("[data-expires]").forEach(tick);
    var chart = document.getElementById("live-chart");
    if (chart) {
      setInterval(function () {
        chart.src = chart.dataset.src + "?at=" + Date.now();
      }, 2000);
    }
  });
})();
