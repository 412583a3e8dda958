// Deno.serve({ handler, onListen }) — everything in the options object.
const server = Deno.serve({
  port: 3000,
  onListen({ port }) {
    console.log(`listening on ${port}`);
  },
  handler: (req: Request) => Response.json({ via: "options.handler", method: req.method }),
});

// Some programs keep the server object around.
void server.finished;
