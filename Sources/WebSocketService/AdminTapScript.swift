extension AdminPages {
    /// The live tap page's script: opens the tap socket with the CSRF token
    /// and prepends a row per event, keeping the newest 500. The only script
    /// of the admin pages, allowed by its response's CSP nonce.
    static let tapScript = """
    "use strict";
    (function () {
      var table = document.getElementById("tap"), rows = table.tBodies[0], state = document.getElementById("tap-state");
      var pause = document.getElementById("pause"), max = 500, skipped = 0;
      var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + location.pathname +
        "?token=" + encodeURIComponent(table.dataset.token);
      var ws = new WebSocket(url);
      ws.onopen = function () { state.textContent = "live"; };
      ws.onclose = function (e) { state.textContent = "closed (" + e.code + "): reload to watch again"; };
      function cell(tr, text, href) {
        var td = tr.insertCell();
        if (href) { var a = document.createElement("a"); a.href = href; a.textContent = text; td.appendChild(a); }
        else td.textContent = text;
      }
      ws.onmessage = function (m) {
        var e = JSON.parse(m.data);
        skipped += e.skipped;
        if (pause.checked) return;
        var tr = rows.insertRow(0);
        tr.className = e.dir;
        cell(tr, new Date(e.t).toISOString().slice(11, 23));
        cell(tr, e.dir === "in" ? "→ in" : "← out");
        if (e.conn) cell(tr, e.conn.slice(0, 8), "connection?id=" + e.conn); else cell(tr, "fan-out");
        cell(tr, e.user || "");
        cell(tr, String(e.to));
        cell(tr, String(e.bytes));
        cell(tr, e.binary ? "(binary)" : e.text);
        while (rows.rows.length > max) rows.deleteRow(rows.rows.length - 1);
        if (skipped) state.textContent = "live, " + skipped + " skipped";
      };
    })();
    """
}
