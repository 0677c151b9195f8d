// A real OpenID provider for the single sign-on tests: the certified npm package `oidc-provider`
// with its development login and consent pages (any user name signs in). Each user's groups are
// read from a JSON file at every token, so a test can remove a group between two sign-ins.
//   node provider.mjs PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI POST_LOGOUT_URI GROUPS_FILE
import fs from "node:fs";
import Provider from "oidc-provider";

const [port, clientId, clientSecret, redirectUri, postLogoutUri, groupsFile] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      post_logout_redirect_uris: [postLogoutUri],
      response_types: ["code"],
      grant_types: ["authorization_code"],
      token_endpoint_auth_method: "client_secret_post",
    },
  ],
  claims: {
    openid: ["sub"],
    profile: ["preferred_username"],
    email: ["email"],
    groups: ["groups"],
  },
  scopes: ["openid", "profile", "email", "groups"],
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
  cookies: { keys: ["test-only-cookie-key"] },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        const groups = JSON.parse(fs.readFileSync(groupsFile, "utf8"))[id] || [];
        return { sub: id, preferred_username: id, email: `${id}@example.com`, groups };
      },
    };
  },
});
provider.listen(Number(port), "127.0.0.1", () => console.log(`ready ${issuer}`));
