// Where a program lives that the user installed the usual ways. An editor started from a
// desktop gets the login shell's PATH, so `lokictl` installed into a virtualenv, by pip
// --user or by pipx is often not on it. No VS Code imports.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

/** The folders searched for `name`, in order: PATH, then ~/.local/bin (pip --user and
 * pipx put their commands there), $PIPX_BIN_DIR, and the bin folder of pipx's venv for the
 * lokid package (PIPX_HOME, ~/.local/share/pipx, ~/.local/pipx). */
export function searchPath(env: NodeJS.ProcessEnv = process.env, home: string = os.homedir()): string[] {
  const dirs = (env.PATH ?? "").split(path.delimiter).filter((d) => d && path.isAbsolute(d));
  dirs.push(path.join(home, ".local", "bin"));
  if (env.PIPX_BIN_DIR) dirs.push(env.PIPX_BIN_DIR);
  const pipxHomes = [env.PIPX_HOME, path.join(home, ".local", "share", "pipx"), path.join(home, ".local", "pipx")];
  for (const h of pipxHomes) if (h) dirs.push(path.join(h, "venvs", "lokid", "bin"));
  return [...new Set(dirs)];
}

function runnable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/** `program` as an absolute path: as given when it names a path (has a slash), else the
 * first runnable file of that name in searchPath(); null when there is none. */
export function findProgram(
  program: string,
  env: NodeJS.ProcessEnv = process.env,
  home: string = os.homedir(),
): string | null {
  if (program.includes("/")) return runnable(program) ? program : null;
  for (const dir of searchPath(env, home)) {
    const file = path.join(dir, program);
    if (runnable(file)) return file;
  }
  return null;
}
