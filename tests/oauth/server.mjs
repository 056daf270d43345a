// A real, independent OAuth2 authorization server for the publishing tests:
// npm oidc-provider, client-credentials grant, JWT access tokens whose `aud`
// comes from the resource indicator (RFC 8707), and RFC 7662 introspection.
//
//   node server.mjs <port> <config.json>
// config.json: {"clients": [{"client_id", "client_secret", "scope"}],
//               "keys": "<file with the signing JWKS; created, or rotated with \"rotate\": true>"}
// Resources: any absolute URI is an audience; one ending in ":short" gives a
// 1-second token for that audience without the suffix; one ending in
// ":opaque" gives an opaque (introspection-only) token.
// Prints "listening <issuer>" once it accepts connections.
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import Provider from 'oidc-provider';

const [port, configPath] = process.argv.slice(2);
const config = JSON.parse(readFileSync(configPath, 'utf8'));
const issuer = `http://127.0.0.1:${port}`;

function newKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'RS256', use: 'sig' };
}
let keys = existsSync(config.keys) ? JSON.parse(readFileSync(config.keys, 'utf8')).keys : [];
// The first key signs; a rotation publishes a new one ahead of the old.
if (keys.length === 0 || config.rotate) keys = [newKey(), ...keys];
writeFileSync(config.keys, JSON.stringify({ keys }));

const audienceOf = (resource) => resource.replace(/:(short|opaque)$/, '');
const provider = new Provider(issuer, {
  clients: config.clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    scope: c.scope,
  })),
  scopes: ['stac:write', 'stac:publish'],
  jwks: { keys },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true, allowedPolicy: async () => true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => undefined,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => ({
        audience: audienceOf(resource),
        scope: 'stac:write stac:publish',
        accessTokenTTL: resource.endsWith(':short') ? 1 : 300,
        accessTokenFormat: resource.endsWith(':opaque') ? 'opaque' : 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
});
provider.proxy = false;
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.listen(Number(port), '127.0.0.1', () => console.log(`listening ${issuer}`));
