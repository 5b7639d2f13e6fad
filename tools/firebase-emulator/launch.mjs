#!/usr/bin/env node
// Starts the Firebase Auth Emulator (and nothing else) from the firebase-tools version pinned in
// package.json, with everything that could reach the internet or wait for a human switched off.
//
//   node tools/firebase-emulator/launch.mjs [--host 127.0.0.1] [--port 9099]
//                                           [--project demo-native1api] [--exit-with-parent]
//
// Defaults come from FIREBASE_AUTH_EMULATOR_HOST_ADDR / FIREBASE_AUTH_EMULATOR_PORT /
// FIREBASE_PROJECT_ID when set. The project id must start with "demo-": the CLI then never looks
// for credentials or talks to a real Firebase project.
//
// Each run gets its own temporary directory: a firebase.json derived from the committed one with
// the requested host/port, the CLI's config store (so no stored login or analytics opt-in is
// used), and TMPDIR (where the CLI writes its hub locator, so parallel runs for the same project
// do not collide). The directory is removed on exit.
//
// Signals: SIGINT/SIGTERM/SIGHUP are forwarded to the CLI, which shuts down cleanly (it ignores a
// duplicate arriving within 100 ms, so signalling the whole process group is fine). With
// --exit-with-parent the launcher also stops the emulator when its parent process dies, so a
// crashed test runner never leaves an emulator behind.

import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const HERE = dirname(fileURLToPath(import.meta.url));
const FIREBASE_JS = join(HERE, "node_modules", "firebase-tools", "lib", "bin", "firebase.js");
const INSTALL_HINT = "npm ci --prefix tools/firebase-emulator";
const EXIT_USAGE = 2;
const EXIT_NOT_INSTALLED = 3;

function fail(code, message) {
  process.stderr.write(`launch.mjs: ${message}\n`);
  process.exit(code);
}

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      host: { type: "string", default: process.env.FIREBASE_AUTH_EMULATOR_HOST_ADDR || "127.0.0.1" },
      port: { type: "string", default: process.env.FIREBASE_AUTH_EMULATOR_PORT || "9099" },
      project: { type: "string", default: process.env.FIREBASE_PROJECT_ID || "demo-native1api" },
      "exit-with-parent": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  }));
} catch (err) {
  fail(EXIT_USAGE, err.message);
}
if (args.help) {
  process.stdout.write(
    "usage: node launch.mjs [--host H] [--port N] [--project demo-...] [--exit-with-parent]\n",
  );
  process.exit(0);
}

const port = Number(args.port);
if (!/^[0-9]+$/.test(args.port) || !Number.isInteger(port) || port < 1 || port > 65535) {
  fail(EXIT_USAGE, `--port must be an integer in 1..65535, got ${JSON.stringify(args.port)}`);
}
if (!/^demo-[a-z0-9-]{1,25}$/.test(args.project)) {
  fail(EXIT_USAGE, `--project must be a "demo-" project id, got ${JSON.stringify(args.project)}`);
}
if (!/^[A-Za-z0-9.:\-[\]]+$/.test(args.host)) {
  fail(EXIT_USAGE, `--host is not a host name or address: ${JSON.stringify(args.host)}`);
}
if (!existsSync(FIREBASE_JS)) {
  fail(EXIT_NOT_INSTALLED, `firebase-tools is not installed; run \`${INSTALL_HINT}\``);
}

// Asks the OS for a currently free port on `host` (released again before firebase-tools binds it).
function freePort(host) {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, host, () => {
      const { port: free } = server.address();
      server.close(() => resolve(free));
    });
  });
}

const config = JSON.parse(readFileSync(join(HERE, "firebase.json"), "utf8"));
config.emulators ??= {};
config.emulators.auth = { ...config.emulators.auth, host: args.host, port };
// The hub and logging emulators always start alongside. Left unpinned, the CLI scans upwards from
// 4400/4500, and two emulators starting at the same moment race for the same port and one of them
// dies ("An unexpected error has occurred"). Give each run its own free ports instead.
for (const name of ["hub", "logging"]) {
  const current = config.emulators[name] ?? {};
  if (current.port === undefined) {
    const host = current.host ?? args.host;
    config.emulators[name] = { ...current, host, port: await freePort(host) };
  }
}

const workDir = mkdtempSync(join(tmpdir(), "native1api-auth-emulator-"));
const tmpDir = join(workDir, "tmp");
const configHome = join(workDir, "config");
mkdirSync(tmpDir);
mkdirSync(configHome);
const configPath = join(workDir, "firebase.json");
writeFileSync(configPath, JSON.stringify(config, null, 2));

let cleanedUp = false;
function cleanup() {
  if (cleanedUp) return;
  cleanedUp = true;
  rmSync(workDir, { recursive: true, force: true });
}

const env = {
  ...process.env,
  // firebase-tools: skips the MOTD fetch (network) and the update check; update-notifier-cjs: same.
  CI: "true",
  NO_UPDATE_NOTIFIER: "1",
  // Fresh config store: no stored credentials, no analytics opt-in (usage tracking stays off).
  XDG_CONFIG_HOME: configHome,
  TMPDIR: tmpDir,
};
// The emulator must not pick up a real service account or point itself at another emulator.
delete env.GOOGLE_APPLICATION_CREDENTIALS;
delete env.FIREBASE_AUTH_EMULATOR_HOST;
delete env.FIREBASE_EMULATOR_HUB;

const child = spawn(
  process.execPath,
  [
    FIREBASE_JS,
    "emulators:start",
    "--only",
    "auth",
    "--project",
    args.project,
    "--config",
    configPath,
    "--non-interactive",
  ],
  { cwd: workDir, env, stdio: ["ignore", "inherit", "inherit"] },
);

for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(signal, () => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  });
}

if (args["exit-with-parent"]) {
  const parent = process.ppid;
  const timer = setInterval(() => {
    if (process.ppid !== parent) {
      process.stderr.write("launch.mjs: parent process exited; stopping the emulator\n");
      child.kill("SIGTERM");
      setTimeout(() => child.kill("SIGKILL"), 10_000).unref();
    }
  }, 500);
  timer.unref();
}

child.on("error", (err) => {
  cleanup();
  fail(1, `could not start firebase-tools: ${err.message}`);
});
child.on("exit", (code, signal) => {
  cleanup();
  if (signal) {
    process.stderr.write(`launch.mjs: firebase-tools exited on ${signal}\n`);
    process.exit(1);
  }
  process.exit(code ?? 1);
});
