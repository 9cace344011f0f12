// A real OpenID provider for mdmd's integration tests: panva's certified
// `oidc-provider`, configured from a JSON file, with a minimal login page in
// place of the library's development interactions. tests/common/oidc.rs starts
// it (plain HTTP on 127.0.0.1) behind a small Rust front whose URL is the
// issuer.
//
//   node provider.mjs CONFIG.json
//
// CONFIG.json: {
//   "issuer": "http://127.0.0.1:FRONT",  // the URL clients see (the front)
//   "port": 41234,                        // where this process listens, on 127.0.0.1
//   "client_id": "...", "client_secret": "...", "redirect_uris": ["..."],
//   "jwks": {"keys": [{ private RSA JWK with "kid", "alg": "RS256", "use": "sig" }]},
//   "users": [{"id", "password", "claims": {...}}]   // optional: USERS below otherwise
//   "max_lifetime_secs": 1800                          // optional
// }
//
// Lifetime: the process exits when its standard input closes (the test that
// started it is gone) or after max_lifetime_secs, whichever comes first.
//
// Users log in with a plain HTML form (no JavaScript): GET /interaction/:uid
// shows it (inputs #login and #password, button #submit); POST
// /interaction/:uid/login checks the password and finishes the interaction,
// or shows the form again with status 401. Consent is never asked: the grant
// is made in loadExistingGrant.

import fs from 'node:fs';
import http from 'node:http';

import Provider from 'oidc-provider';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));

const SCOPES = ['openid', 'email', 'profile', 'groups'];

const USERS = config.users ?? [
  {
    id: 'alice',
    password: 'alice-pw',
    claims: {
      email: 'alice@example.org',
      email_verified: true,
      name: 'Alice Archer',
      preferred_username: 'alice',
      groups: ['mdm-admins', 'sales'],
    },
  },
  {
    id: 'oscar',
    password: 'oscar-pw',
    claims: {
      email: 'oscar@example.org',
      email_verified: true,
      name: 'Oscar Olsen',
      preferred_username: 'oscar',
      groups: ['mdm-operators'],
    },
  },
  {
    id: 'rita',
    password: 'rita-pw',
    claims: {
      email: 'rita@example.org',
      email_verified: true,
      name: 'Rita Reyes',
      preferred_username: 'rita',
      groups: ['mdm-readers'],
    },
  },
  {
    id: 'nadia',
    password: 'nadia-pw',
    claims: {
      email: 'nadia@example.org',
      email_verified: true,
      name: 'Nadia Novak',
      preferred_username: 'nadia',
      groups: [],
    },
  },
];

const findUser = (id) => USERS.find((u) => u.id === id);

const provider = new Provider(config.issuer, {
  clients: [
    {
      client_id: config.client_id,
      client_secret: config.client_secret,
      redirect_uris: config.redirect_uris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      // client_secret_post is accepted too: the library takes either form of
      // the secret for a client registered with either method.
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'RS256',
    },
  ],
  clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
  jwks: config.jwks,
  responseTypes: ['code'],
  pkce: { required: () => true },
  scopes: SCOPES,
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  // The scopes' claims go into the ID token even though an access token is issued too.
  conformIdTokenClaims: false,
  async findAccount(_ctx, id) {
    const user = findUser(id);
    if (!user) return undefined;
    return {
      accountId: user.id,
      async claims() {
        return { sub: user.id, ...user.claims };
      },
    };
  },
  // First-party client: grant every scope it may ask for, so no consent prompt.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      const grant = await ctx.oidc.provider.Grant.find(grantId);
      if (grant) return grant;
    }
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope(SCOPES.join(' '));
    await grant.save();
    return grant;
  },
  interactions: {
    url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  features: {
    devInteractions: { enabled: false },
  },
  cookies: {
    keys: ['mdmd-test-cookie-key-0123456789abcdef'],
  },
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 120,
    IdToken: 3600,
    Interaction: 900,
    Session: 3600,
    Grant: 3600,
  },
});
// Behind the front: trust its X-Forwarded-* headers.
provider.proxy = true;

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function loginForm(res, uid, { status = 200, error, login = '' } = {}) {
  const body = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in - test IdP</title></head>
<body>
<h1>Sign in</h1>
${error ? `<p id="error" role="alert">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}/login">
<label for="login">Username</label>
<input id="login" name="login" autocomplete="username" value="${escapeHtml(login)}" autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password">
<button id="submit" type="submit">Sign in</button>
</form>
</body></html>
`;
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.setHeader('Cache-Control', 'no-store');
  res.end(body);
}

function readForm(req) {
  return new Promise((resolve, reject) => {
    let data = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => {
      data += chunk;
      if (data.length > 64 * 1024) reject(new Error('form too large'));
    });
    req.on('end', () => resolve(new URLSearchParams(data)));
    req.on('error', reject);
  });
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');

  if (details.prompt.name === 'consent') {
    // Not reached with loadExistingGrant above; grant rather than ask, should it be.
    const grant = new provider.Grant({ clientId: details.params.client_id, accountId: details.session.accountId });
    grant.addOIDCScope(SCOPES.join(' '));
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return;
  }

  if (req.method === 'GET' && !action) {
    loginForm(res, uid);
    return;
  }
  if (req.method === 'POST' && action === 'login') {
    const form = await readForm(req);
    const login = form.get('login') ?? '';
    const user = findUser(login);
    if (!user || user.password !== (form.get('password') ?? '')) {
      loginForm(res, uid, { status: 401, error: 'Invalid username or password.', login });
      return;
    }
    await provider.interactionFinished(req, res, { login: { accountId: user.id } }, { mergeWithLastSubmission: false });
    return;
  }
  res.statusCode = 405;
  res.end('method not allowed');
}

const handler = provider.callback();
const server = http.createServer(async (req, res) => {
  const m = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login))?\/?(?:\?.*)?$/.exec(req.url);
  if (!m) {
    handler(req, res);
    return;
  }
  try {
    await interaction(req, res, m[1], m[2]);
  } catch (err) {
    console.error('interaction failed:', err);
    if (!res.headersSent) {
      res.statusCode = 400;
      res.setHeader('Content-Type', 'text/plain; charset=utf-8');
    }
    res.end(`interaction failed: ${err.message}`);
  }
});

server.listen(config.port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on http://127.0.0.1:${config.port} as ${config.issuer}`);
});

// Bounded lifetime: gone with the test process (stdin closes) or after max_lifetime_secs.
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
setTimeout(() => process.exit(0), (config.max_lifetime_secs ?? 1800) * 1000).unref();
process.on('SIGTERM', () => process.exit(0));
