/// A page for trying the chat in a browser: the log, a line to type in, and
/// who is typing.
let chatPage = #"""
<!doctype html>
<meta charset="utf-8">
<title>Chat</title>
<ul id="log"></ul>
<p id="typing"></p>
<form id="form"><input id="text" autocomplete="off" autofocus> <button>Say</button></form>
<script src="/_ws/socket.js"></script>
<script>
  const room = "lobby";
  const user = encodeURIComponent(prompt("Your name?") || "guest");
  const show = (text) => {
    const item = document.createElement("li");
    item.textContent = text;
    document.getElementById("log").append(item);
  };
  const chat = new Socket(false,
    () => chat.send({ channel: room, cmd: "history" }),
    (message) => {
      if (message.cmd === "said") show(message.param.user + ": " + message.param.text);
      if (message.cmd === "history") message.param.forEach((line) => show(line.user + ": " + line.text));
      if (message.cmd === "online-update") show(message.param.userID + (message.param.connected ? " came in" : " left"));
      if (message.cmd === "error") show("error: " + message.param.message);
    },
    (error) => console.warn(error),
    "/chat?ch=" + room + "&user=" + user);
  const live = new Socket(false, () => {},
    (message) => {
      if (message.cmd !== "typing") return;
      document.getElementById("typing").textContent = message.param + " is typing…";
      setTimeout(() => { document.getElementById("typing").textContent = ""; }, 2000);
    },
    (error) => console.warn(error),
    "/live?ch=" + room + "/typing&user=" + user);
  const text = document.getElementById("text");
  text.oninput = () => live.send({ channel: room + "/typing", cmd: "typing" });
  document.getElementById("form").onsubmit = (event) => {
    event.preventDefault();
    chat.send({ channel: room, cmd: "say", param: text.value });
    text.value = "";
  };
</script>
"""#
