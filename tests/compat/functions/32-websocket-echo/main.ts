// WebSocket echo with Deno.upgradeWebSocket; plain HTTP gets a hint.
export default (req: Request): Response => {
  if (req.headers.get("upgrade")?.toLowerCase() !== "websocket") {
    return new Response("connect with a WebSocket", { status: 426 });
  }
  const { socket, response } = Deno.upgradeWebSocket(req);
  socket.onopen = () => socket.send("welcome");
  socket.onmessage = (e) => socket.send(`echo: ${e.data}`);
  return response;
};
