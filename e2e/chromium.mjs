// Launches Debian's Chromium headless the way the browser tests need it: no sandbox (root),
// no background networking (the closed network refuses it), autoplay without a gesture.
import { chromium } from "playwright-core";

// CHROMIUM_IGNORE_CERT_ERRORS=1: accept a test's self-signed certificate (HTTPS tests only).
export function launchChromium() {
  const args = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
  ];
  if (process.env.CHROMIUM_IGNORE_CERT_ERRORS === "1") args.push("--ignore-certificate-errors");
  return chromium.launch({ executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium", args });
}
