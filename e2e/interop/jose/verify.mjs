// Verifies account's access tokens with the npm package jose, an implementation of JWT that owes
// nothing to this repository, the way a verifier outside the system would: the keys come from the
// JWKS URL (createRemoteJWKSet, which fetches the set again when a token names a kid it lacks),
// the algorithm is pinned to EdDSA, the header's typ to at+jwt, and issuer, audience and a present
// exp are checked, with the contract's 30 s of clock leeway.
//
//   node verify.mjs --jwks URL --issuer ISS --audience AUD [--cooldown-ms N] [TOKEN...]
//
// With tokens as arguments it verifies each and exits. Without, it reads standard input, one JSON
// value a line: a token string, or {"token": "...", "audience": "..."} to verify for another
// audience; it answers each line as it comes, with one key set for its whole life, so a caller can
// rotate the keys between two lines. Either way it prints one JSON line per token:
//
//   {"ok":true,"header":{...},"claims":{...},"kids":[...]}
//   {"ok":false,"code":"ERR_JWT_CLAIM_VALIDATION_FAILED","claim":"aud","reason":"check_failed","message":"...","kids":[...]}
//
// kids lists the key ids of the set jose holds after the verification. --cooldown-ms is jose's
// cooldownDuration: the least time between two fetches of the set (jose's default is 30 s).
// Exit status 2 on a usage error, else 0: the answers tell what verified.
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { createRemoteJWKSet, jwtVerify } from "jose";

function usage(msg) {
  process.stderr.write(`verify.mjs: ${msg}\nusage: node verify.mjs --jwks URL --issuer ISS --audience AUD [--cooldown-ms N] [TOKEN...]\n`);
  process.exit(2);
}

let args;
try {
  args = parseArgs({
    allowPositionals: true,
    options: {
      jwks: { type: "string" },
      issuer: { type: "string" },
      audience: { type: "string" },
      "cooldown-ms": { type: "string" },
    },
  });
} catch (err) {
  usage(err.message);
}
const { jwks: jwksURL, issuer, audience } = args.values;
if (!jwksURL || !issuer || !audience) {
  usage("--jwks, --issuer and --audience are required");
}
const options = {};
if (args.values["cooldown-ms"] !== undefined) {
  const ms = Number(args.values["cooldown-ms"]);
  if (!Number.isInteger(ms) || ms < 0) {
    usage("--cooldown-ms must be a whole number of milliseconds");
  }
  options.cooldownDuration = ms;
}

const keySet = createRemoteJWKSet(new URL(jwksURL), options);

function kids() {
  return (keySet.jwks()?.keys ?? []).map((k) => k.kid);
}

async function verify(token, aud) {
  try {
    const { payload, protectedHeader } = await jwtVerify(token, keySet, {
      algorithms: ["EdDSA"],
      typ: "at+jwt",
      issuer,
      audience: aud,
      requiredClaims: ["exp"],
      clockTolerance: 30,
    });
    return { ok: true, header: protectedHeader, claims: payload, kids: kids() };
  } catch (err) {
    return {
      ok: false,
      code: err.code ?? err.name,
      claim: err.claim,
      reason: err.reason,
      message: err.message,
      kids: kids(),
    };
  }
}

function print(result) {
  process.stdout.write(JSON.stringify(result) + "\n");
}

if (args.positionals.length > 0) {
  for (const token of args.positionals) {
    print(await verify(token, audience));
  }
} else {
  for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
    if (line.trim() === "") {
      continue;
    }
    let req;
    try {
      req = JSON.parse(line);
    } catch (err) {
      print({ ok: false, code: "BAD_REQUEST_LINE", message: err.message, kids: kids() });
      continue;
    }
    const token = typeof req === "string" ? req : req?.token;
    if (typeof token !== "string") {
      print({ ok: false, code: "BAD_REQUEST_LINE", message: "want a token string or {\"token\": ...}", kids: kids() });
      continue;
    }
    print(await verify(token, typeof req === "object" && req.audience ? req.audience : audience));
  }
}
