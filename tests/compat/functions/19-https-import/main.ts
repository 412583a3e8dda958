// An https: import from an allowed module host (which itself imports a relative URL).
import { shout } from "https://localhost:{{HTTPS_PORT}}/lib/v1/shout.ts";

export default (req: Request) => new Response(shout(new URL(req.url).searchParams.get("say") ?? "hey"));
