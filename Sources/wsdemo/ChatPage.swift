/// The chat page: plain HTML and a plain WebSocket (the TypeScript client
/// comes later). The room is the page's `?ch=` (default "lobby").
let chatPage = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>wsdemo chat</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; max-width: 44rem; margin: 2rem auto; padding: 0 1rem; }
  #log { border: 1px solid #ccc; height: 24rem; overflow-y: auto; padding: .5rem; background: #fafafa; }
  .sys { color: #777; font-style: italic; } .err { color: #b00; } .me { color: #05a; }
  form { display: flex; gap: .5rem; margin-top: .5rem; } #text { flex: 1; }
</style>
</head>
<body>
<h1>Chat <small id="room"></small></h1>
<div id="log"></div>
<form id="form"><input id="name" placeholder="name" size="10"><input id="text" placeholder="say something" autocomplete="off"><button>Send</button></form>
<script>
"use strict";
const room = new URLSearchParams(location.search).get("ch") || "lobby";
document.getElementById("room").textContent = "#" + room;
const log = document.getElementById("log");
function line(text, cls) {
  const div = document.createElement("div");
  div.textContent = text;
  if (cls) div.className = cls;
  log.appendChild(div);
  log.scrollTop = log.scrollHeight;
}
const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws?ch=" + encodeURIComponent(room);
let socket, me = null;
function connect() {
  socket = new WebSocket(url);
  socket.onopen = () => { line("connected to " + room, "sys"); socket.send(JSON.stringify({cmd: "hello", param: null})); };
  socket.onclose = (e) => { line("disconnected (" + e.code + "), retrying in 2 s", "sys"); setTimeout(connect, 2000); };
  socket.onmessage = (e) => {
    let m;
    try { m = JSON.parse(e.data); } catch { line("bad message from server", "err"); return; }
    switch (m.cmd) {
      case "hello": me = m.param.id; break;
      case "say": line((m.param.name || "anonymous") + ": " + m.param.text, m.from === me ? "me" : ""); break;
      case "online-update": line(m.param.userID.slice(0, 8) + (m.param.connected ? " joined" : " left"), "sys"); break;
      case "error": line("error: " + m.param.message, "err"); break;
      default: line(e.data, "sys");
    }
  };
}
connect();
document.getElementById("form").onsubmit = (e) => {
  e.preventDefault();
  const text = document.getElementById("text");
  if (!text.value || socket.readyState !== WebSocket.OPEN) return;
  socket.send(JSON.stringify({channel: room, cmd: "say", param: {name: document.getElementById("name").value, text: text.value}}));
  text.value = "";
};
</script>
</body>
</html>
"""#
