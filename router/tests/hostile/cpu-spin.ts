// GET /spin never yields the event loop. Expect: 504, and the stuck instance is
// replaced so the function answers again afterwards.
export default (req: Request) => {
  if (new URL(req.url).pathname === "/spin") {
    for (;;) { /* spin */ }
  }
  return new Response("alive");
};
