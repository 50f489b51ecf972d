// A real OpenID provider (panva's oidc-provider, OpenID Certified) for Gridlink's tests.
//
// Started by tests/support/oidc_provider.py; configured by environment variables only
// (the client secret never on a command line). It listens on loopback, on OP_PORT or a
// free port, and prints "listening <port>" once it accepts connections. Its dev
// interactions accept any login: the account id is the login typed, its email the login
// itself when it has an "@", else <login>@example.test (verified unless the login starts
// with "unverified").
//
//   OP_PORT                 port to listen on (0: a free one)
//   OP_CLIENT_ID, OP_CLIENT_SECRET, OP_REDIRECT_URI   the one registered client
//   OP_ID_TOKEN_TTL         seconds an ID token lives (default 600)
//   OP_CLOCK_SKEW_SECONDS   this provider's clock runs this far ahead (negative: behind)
//   OP_FOREIGN_JWKS=1       publish another key under the signing key's kid: every ID token
//                           it issues is signed by a key its JWKS does not hold

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

// Stdout carries the "listening" line alone (the harness reads no more of it): every
// notice and warning goes to stderr, the log.
for (const method of ['log', 'info', 'warn', 'debug']) {
  console[method] = console.error;
}

const skewMs = Number(process.env.OP_CLOCK_SKEW_SECONDS || 0) * 1000;
if (skewMs) {
  const realNow = Date.now;
  Date.now = () => realNow() + skewMs;
}

const { default: Provider } = await import('oidc-provider');

function signingKey(kid) {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid, use: 'sig', alg: 'RS256' };
}

function publicPart({ d, p, q, dp, dq, qi, ...publicKey }) {
  return publicKey;
}

const kid = randomBytes(8).toString('hex');
const key = signingKey(kid);
const foreignJwks = process.env.OP_FOREIGN_JWKS === '1'
  ? { keys: [publicPart(signingKey(kid))] }
  : null;

function emailOf(login) {
  return login.includes('@') ? login : `${login}@example.test`;
}

const server = createServer();
server.listen(Number(process.env.OP_PORT || 0), '127.0.0.1', () => {
  const { port } = server.address();
  const provider = new Provider(`http://127.0.0.1:${port}`, {
    clients: [{
      client_id: process.env.OP_CLIENT_ID,
      client_secret: process.env.OP_CLIENT_SECRET,
      redirect_uris: [process.env.OP_REDIRECT_URI],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    jwks: { keys: [key] },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['preferred_username'],
    },
    async findAccount(ctx, sub) {
      return {
        accountId: sub,
        async claims() {
          return {
            sub,
            email: emailOf(sub),
            email_verified: !sub.startsWith('unverified'),
            preferred_username: sub.split('@')[0],
          };
        },
      };
    },
    features: { devInteractions: { enabled: true } },
    pkce: { required: () => true },
    ttl: {
      IdToken: Number(process.env.OP_ID_TOKEN_TTL || 600),
      AccessToken: 600,
      AuthorizationCode: 60,
      // Longer than the late provider is behind: its cookies must outlive its skew.
      Interaction: 3600,
      Session: 14 * 24 * 3600,
      Grant: 3600,
    },
    cookies: { keys: [randomBytes(32).toString('hex')] },
  });
  if (foreignJwks) {
    provider.use(async (ctx, next) => {
      if (ctx.path === '/jwks') {
        ctx.body = foreignJwks;
        return;
      }
      await next();
    });
  }
  server.on('request', provider.callback());
  process.stdout.write(`listening ${port}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
