// A module host the operator did not allow.
import { shout } from "https://example.com/lib/v1/shout.ts";

export default () => new Response(shout("never"));
