// The entry is not at the top: deployed with ?entry=src/server.ts.
import { route } from "./routes/index.ts";

export default { fetch: (req: Request) => route(new URL(req.url).pathname) };
