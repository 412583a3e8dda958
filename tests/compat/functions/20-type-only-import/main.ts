// Only a type is imported: the import disappears from the running code.
import type { Context } from "hono";

interface Reply {
  handledBy: string;
}

function describe(_c?: Context): Reply {
  return { handledBy: "a plain handler typed with hono's Context" };
}

export default (_req: Request): Response => Response.json(describe());
