// The cloud metadata address.
import creds from "https://169.254.169.254/latest/meta-data/iam/security-credentials/role.ts";

export default () => Response.json(creds);
