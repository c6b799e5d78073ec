// What `foreman service install` writes: a launchd agent (macOS) or a systemd user unit plus a 0600
// secrets file (Linux). Pure text from settings, so both can be generated and checked on any machine.

/** Settings kept out of world-readable files: they go to a mode 0600 file. */
export const SECRET_SETTINGS: ReadonlySet<string> = new Set(["FOREMAN_TOKEN", "FOREMAN_WEBHOOK_SECRET", "FOREMAN_OLLAMA_TOKEN"]);

/** A secret setting, or FOREMAN_OLLAMA_URL when one of its targets carries its own `token=`. */
export function isSecretSetting(name: string, value: string): boolean {
  return SECRET_SETTINGS.has(name) || (name === "FOREMAN_OLLAMA_URL" && /;\s*token\s*=/.test(value));
}

/** The launchd label, also the plist's file name; "local." marks a job the user made, not a vendor's. */
export const LAUNCHD_LABEL = "local.foreman";

/** The systemd user unit's name. */
export const SYSTEMD_UNIT = "foreman.service";

/** What the service runs and with which settings. */
export interface ServiceSpec {
  /** The command line, absolute paths first, ending in "serve". */
  command: string[];
  /** FOREMAN_* settings in the order written; secrets included (each generator decides where they go). */
  env: Array<[string, string]>;
  /** The service's working directory (where a relative path would land; the database's folder). */
  workingDirectory: string;
  /** How long the service manager waits after SIGTERM before SIGKILL, in seconds. */
  stopTimeoutSeconds: number;
}

/** Thrown for a value no service file can carry (a control character such as a newline). */
export class ServiceFileError extends Error {}

function plain(name: string, value: string): string {
  // Neither XML 1.0 nor a systemd line can hold control characters; a token never needs one.
  if (/[\x00-\x1f\x7f]/.test(value)) throw new ServiceFileError(`${name} contains a control character (a newline?); remove it`);
  return value;
}

function xml(value: string): string {
  return value.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

/**
 * The launchd agent. launchd has no environment file, so the settings, secrets included, sit in the plist
 * and the caller writes it with mode 0600. KeepAlive restarts foreman when it exits unsuccessfully (a
 * crash, or a kill) but not after a clean stop; launchd waits ThrottleInterval seconds between starts.
 */
export function launchdPlist(spec: ServiceSpec, logFile: string): string {
  const string = (value: string) => `<string>${xml(value)}</string>`;
  const env = spec.env.map(([name, value]) => `\t\t<key>${xml(name)}</key>\n\t\t${string(plain(name, value))}\n`).join("");
  return `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
\t<key>Label</key>
\t${string(LAUNCHD_LABEL)}
\t<key>ProgramArguments</key>
\t<array>
${spec.command.map((arg) => `\t\t${string(plain("the command", arg))}\n`).join("")}\t</array>
\t<key>EnvironmentVariables</key>
\t<dict>
${env}\t</dict>
\t<key>WorkingDirectory</key>
\t${string(plain("the working directory", spec.workingDirectory))}
\t<key>RunAtLoad</key>
\t<true/>
\t<key>KeepAlive</key>
\t<dict>
\t\t<key>SuccessfulExit</key>
\t\t<false/>
\t</dict>
\t<key>ThrottleInterval</key>
\t<integer>5</integer>
\t<key>ExitTimeOut</key>
\t<integer>${spec.stopTimeoutSeconds}</integer>
\t<key>StandardOutPath</key>
\t${string(plain("the log file", logFile))}
\t<key>StandardErrorPath</key>
\t${string(plain("the log file", logFile))}
</dict>
</plist>
`;
}

/** A systemd word in double quotes: C escapes for `\` and `"`, `%%` for specifiers, `$$` for variable expansion. */
function systemdQuoted(name: string, value: string, { dollar }: { dollar: boolean }): string {
  let quoted = plain(name, value).replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/%/g, "%%");
  if (dollar) quoted = quoted.replace(/\$/g, "$$$$");
  return `"${quoted}"`;
}

/** A path setting (WorkingDirectory=, EnvironmentFile=): taken whole, so only specifiers need escaping. */
function systemdPath(name: string, value: string): string {
  return plain(name, value).replace(/%/g, "%%");
}

/**
 * The systemd user unit. Settings without secrets are Environment= lines (`systemctl --user cat foreman`
 * shows them); secrets come from `secretsFile` (EnvironmentFile=, mode 0600) when there are any.
 * Restart=on-failure restarts after a crash or a kill, but not after exit status 2 (a bad setting, which a
 * restart cannot fix). Logs go to the user journal.
 */
export function systemdUnit(spec: ServiceSpec, secretsFile: string | undefined): string {
  const settings = spec.env.filter(([name, value]) => !isSecretSetting(name, value));
  const lines = [
    "# foreman as a systemd user service, written by `foreman service install`; `foreman service uninstall` removes it.",
    "# The settings are the FOREMAN_* variables at install time: change them by installing again.",
    "[Unit]",
    "Description=foreman: a durable queue in front of Ollama",
    "",
    "[Service]",
    "Type=exec",
    `ExecStart=${spec.command.map((arg) => systemdQuoted("the command", arg, { dollar: true })).join(" ")}`,
    `WorkingDirectory=${systemdPath("the working directory", spec.workingDirectory)}`,
    ...settings.map(([name, value]) => `Environment=${systemdQuoted(name, `${name}=${value}`, { dollar: false })}`),
    ...(secretsFile ? [`EnvironmentFile=${systemdPath("the secrets file", secretsFile)}`] : []),
    "Restart=on-failure",
    "RestartSec=2",
    "RestartPreventExitStatus=2",
    `TimeoutStopSec=${spec.stopTimeoutSeconds}`,
    "",
    "[Install]",
    "WantedBy=default.target",
    "",
  ];
  return lines.join("\n");
}

/** The secrets file for EnvironmentFile=: NAME="value", escaped so systemd (and a POSIX shell) read it back exactly. */
export function secretsEnvFile(spec: ServiceSpec): string | undefined {
  const secrets = spec.env.filter(([name, value]) => isSecretSetting(name, value));
  if (secrets.length === 0) return undefined;
  const lines = secrets.map(([name, value]) => `${name}="${plain(name, value).replace(/[\\"`$]/g, "\\$&")}"`);
  return `# foreman's secrets for ${SYSTEMD_UNIT}, written by \`foreman service install\` (mode 0600).\n${lines.join("\n")}\n`;
}
