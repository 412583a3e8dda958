// A package with an exports map: root and subpath entry points.
import { name } from "npm:@skiff-test/toolkit@1.2.0";
import { reverse } from "npm:@skiff-test/toolkit@1.2.0/strings";
import { mean } from "npm:@skiff-test/toolkit@1.2.0/math";

export default async (req: Request) => {
  const words: string[] = await req.json();
  return Response.json({
    pkg: name,
    reversed: words.map(reverse),
    meanLength: mean(words.map((w) => w.length)),
  });
};
