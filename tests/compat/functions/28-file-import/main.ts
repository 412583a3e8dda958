// Reading a host file through the module loader.
import passwd from "file:///etc/passwd" with { type: "text" };

export default () => new Response(String(passwd));
