// A CommonJS-only package (module.exports, require inside) used from ESM.
import legacy from "npm:@skiff-test/legacy-cjs@^2";
import { leftPad } from "npm:@skiff-test/legacy-cjs@^2";

export default (req: Request) => {
  const id = new URL(req.url).searchParams.get("id") ?? "7";
  return Response.json({ padded: leftPad(id, 5, "0"), sum: legacy.sum([1, 2, 3, 4]), kind: legacy.kind });
};
