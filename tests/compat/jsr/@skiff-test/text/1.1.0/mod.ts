export { titleCase } from "./src/case.ts";

/** Lower-case, dash-separated form of a title (1.1: keeps digits together). */
export function slugify(title: string): string {
  return title.toLowerCase().trim().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "");
}

export const VERSION = "1.1.0";
