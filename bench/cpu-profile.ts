// Summarises a .cpuprofile (Chrome format, as `bun --cpu-prof` writes it): the functions with the most
// self time. `bun bench/cpu-profile.ts <file.cpuprofile> [top]`.
interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Self time per function (ms), most first. */
export function selfTimes(profile: Profile): Array<{ name: string; ms: number; share: number }> {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const totals = new Map<string, number>();
  let all = 0;
  profile.samples.forEach((id, i) => {
    const node = byId.get(id)!;
    const { functionName, url, lineNumber } = node.callFrame;
    const name = `${functionName || "(anonymous)"} ${url.split("/").slice(-2).join("/")}:${lineNumber + 1}`;
    const ms = (profile.timeDeltas[i] ?? 0) / 1000;
    totals.set(name, (totals.get(name) ?? 0) + ms);
    all += ms;
  });
  return [...totals].map(([name, ms]) => ({ name, ms, share: ms / all })).sort((a, b) => b.ms - a.ms);
}

if (import.meta.main) {
  const [file, top = "25"] = process.argv.slice(2);
  const profile = (await Bun.file(file!).json()) as Profile;
  for (const { name, ms, share } of selfTimes(profile).slice(0, Number(top))) {
    console.log(`${ms.toFixed(1).padStart(9)} ms ${(share * 100).toFixed(1).padStart(5)}%  ${name}`);
  }
}
