// Invalid statuses, headers and results. Expect: 500 function_error each time,
// and the instance keeps serving.
export default (req: Request) => {
  switch (new URL(req.url).pathname) {
    case "/status999":
      return new Response("x", { status: 999 });
    case "/status101":
      return new Response("x", { status: 101 });
    case "/badheader":
      return new Response("x", { headers: { "x-bad\r\ninjected": "v" } });
    case "/badvalue":
      return new Response("x", {
        headers: { "x-v": "a\r\nSet-Cookie: evil=1" },
      });
    case "/number":
      return 42 as unknown as Response;
    default:
      return new Response("alive");
  }
};
