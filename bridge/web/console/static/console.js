// Live case counts on the cases page: refreshed every 5 s, no framework.
(function () {
  const box = document.getElementById("counts");
  if (!box) return;
  async function refresh() {
    try {
      const r = await fetch(box.dataset.src, { credentials: "same-origin" });
      if (!r.ok) return;
      const counts = await r.json();
      for (const el of box.querySelectorAll("[data-state]")) {
        const v = counts[el.dataset.state];
        if (v !== undefined) el.textContent = v;
      }
    } catch (e) { /* the next round will tell */ }
  }
  setInterval(refresh, 5000);
})();
