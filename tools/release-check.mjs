#!/usr/bin/env node
// Release hygiene, for CI: reads the release plan of the pending changesets (`changeset status --output`) and fails
// when a package would leave 0.x (changesets bumps a peer dependent to a major version when its peer range is left;
// for 0.x ranges a minor bump of the dependency does that), when a package would get a major bump none of its
// changesets asked for, or when a published package changed without a changeset naming it (see checkChangesets).
//
// On the base branch itself (CI clones main) the plan is that of every changeset pending in .changeset/*.md.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, sep } from 'node:path';
import { binPath, readJson, repoRoot, workspacePackages } from './workspace-packages.mjs';

/** Files whose change needs no release: tests, fixtures, benchmarks and test-only configuration. */
const NOT_RELEASED = /(^|\/)(__fixtures__|bench)\/|\.test\.[cm]?[jt]s$|(^|\/)(jest\.config\.[cm]?js|tsconfig\.json|CHANGELOG\.md)$/;

function git(...args) {
  const result = spawnSync('git', args, { cwd: repoRoot, encoding: 'utf8' });
  return result.status === 0 ? result.stdout.trim() : undefined;
}

const lines = (text) => (text ? text.split('\n').filter(Boolean) : []);

/** The ref to compare with: the base branch, or its remote-tracking branch where only that exists (a CI checkout). */
function baseRef(baseBranch) {
  for (const ref of [baseBranch, `origin/${baseBranch}`]) {
    if (git('rev-parse', '--verify', '--quiet', `${ref}^{commit}`)) return ref;
  }
  return undefined;
}

/** The release plan of the pending changesets, as `changeset status --output` writes it. */
function releasePlan(since) {
  const dir = mkdtempSync(join(tmpdir(), 'release-check-'));
  const output = join(dir, 'release-plan.json');
  const args = [binPath('@changesets/cli', 'changeset'), 'status', `--output=${output}`, ...(since ? [`--since=${since}`] : [])];
  const result = spawnSync(process.execPath, args, { cwd: repoRoot, encoding: 'utf8' });
  const plan = result.status === 0 ? readJson(output) : undefined;
  rmSync(dir, { recursive: true, force: true });
  if (!plan) {
    process.stderr.write(result.stdout + result.stderr);
    fail([`changeset status failed (exit ${result.status}).`]);
  }
  return plan;
}

function fail(problems) {
  console.error(`release-check: ${problems.length === 1 ? 'a problem' : `${problems.length} problems`}\n`);
  for (const problem of problems) console.error(`  ✗ ${problem}\n`);
  process.exit(1);
}

const majorOf = (version) => Number(version.split('.')[0]);

/** Why a release is major: the changesets that ask for it, or the peer dependencies released with it. */
function majorCause(release, plan, manifest) {
  const asking = plan.changesets.filter((cs) => cs.releases.some((r) => r.name === release.name && r.type === 'major'));
  if (asking.length > 0) return { requested: true, text: `asked for by ${asking.map((cs) => `.changeset/${cs.id}.md`).join(', ')}` };
  const peers = Object.entries(manifest.peerDependencies ?? {}).flatMap(([name, range]) => {
    const peer = plan.releases.find((r) => r.name === name && r.type !== 'none');
    return peer ? [`${name} ${peer.oldVersion} → ${peer.newVersion} (its peer range is "${range}")`] : [];
  });
  return {
    requested: false,
    text:
      peers.length > 0
        ? `no changeset asks for it: changesets bumps a peer dependent to a major version when the new version leaves its peer range — ${peers.join('; ')}. Widen the peer range to include the new version (e.g. "^0.1.0 || ^0.2.0") if the package works with it.`
        : 'no changeset asks for it.',
  };
}

function checkVersions(plan, manifests) {
  const problems = [];
  for (const release of plan.releases) {
    if (release.type !== 'major') continue;
    const { requested, text } = majorCause(release, plan, manifests.get(release.name) ?? {});
    if (majorOf(release.oldVersion) < 1) {
      problems.push(`${release.name} would go from ${release.oldVersion} to ${release.newVersion}: ${text} Leaving 0.x is a deliberate step, not a side effect of a changeset: set 1.0.0 by hand when it is time.`);
    } else if (!requested) {
      problems.push(`${release.name} would get a major release (${release.oldVersion} → ${release.newVersion}): ${text}`);
    }
  }
  return problems;
}

/** Release-relevant files of the package under `prefix` that differ from `commit` (committed, uncommitted, untracked). */
function changedFiles(prefix, commit) {
  const files = [
    ...lines(git('diff', '--name-only', '--no-relative', commit, '--', prefix)),
    ...lines(git('ls-files', '--others', '--exclude-standard', '--', prefix)),
  ];
  return files.filter((file) => !NOT_RELEASED.test(file.slice(prefix.length)));
}

const listed = (files) => files.slice(0, 4).join(', ') + (files.length > 4 ? `, … (${files.length} files)` : '');

/**
 * Published packages changed without a changeset, by two rules:
 * - since their last release (the last commit that set their version): a pending changeset must name them. This is
 *   the rule that still bites on the base branch itself, where CI runs.
 * - since the base branch (on a branch, or uncommitted work on the base branch): a changeset added since must name
 *   them, so that each change brings its own changelog entry.
 */
function checkChangesets(plan, base, packages, ignored) {
  const mergeBase = git('merge-base', base, 'HEAD');
  if (!mergeBase) return [`cannot find where HEAD diverged from ${base} (a shallow clone? fetch more history).`];
  const addedSinceBase = new Set(
    [...lines(git('diff', '--name-only', '--no-relative', '--diff-filter=d', mergeBase, '--', '.changeset')), ...lines(git('ls-files', '--others', '--exclude-standard', '--', '.changeset'))]
      .filter((file) => /^\.changeset\/.+\.md$/.test(file) && file !== '.changeset/README.md')
      .map((file) => file.slice('.changeset/'.length, -'.md'.length)),
  );
  const namedBy = (changesets) => new Set(changesets.flatMap((cs) => cs.releases.map((r) => r.name)));
  const pending = namedBy(plan.changesets);
  const newSinceBase = namedBy(plan.changesets.filter((cs) => addedSinceBase.has(cs.id)));
  const howToFix = (name) => `Run \`npx changeset\` and pick ${name} (bump "none" in the file when the change needs no release).`;

  const problems = [];
  for (const { name, relativeDir, manifest } of packages) {
    if (manifest.private === true || ignored.has(name)) continue;
    const prefix = relativeDir.split(sep).join('/') + '/';
    const released = git('log', '-1', '--format=%H', '-G"version"', '--', `${prefix}package.json`);
    // A package never committed is new: everything in it is a change.
    const sinceRelease = released ? changedFiles(prefix, released) : changedFiles(prefix, mergeBase);
    if (sinceRelease.length > 0 && !pending.has(name)) {
      const since = released ? `its version was last set (${released.slice(0, 7)})` : 'it was added';
      problems.push(`${name} changed since ${since} (${listed(sinceRelease)}) and no pending changeset names it. ${howToFix(name)}`);
      continue;
    }
    const sinceBase = changedFiles(prefix, mergeBase);
    // `changeset version` changes the version and consumes the changesets: that change needs none.
    const baseManifest = git('show', `${mergeBase}:${prefix}package.json`);
    const versioned = baseManifest !== undefined && JSON.parse(baseManifest).version !== manifest.version;
    if (sinceBase.length > 0 && !newSinceBase.has(name) && !versioned) {
      problems.push(`${name} changed since ${base} (${listed(sinceBase)}) but no changeset added since then names it. ${howToFix(name)}`);
    }
  }
  return problems;
}

const config = readJson(join(repoRoot, '.changeset', 'config.json'));
const baseBranch = config.baseBranch ?? 'main';
const base = baseRef(baseBranch);
if (!base) {
  fail([`found neither ${baseBranch} nor origin/${baseBranch} in git: the check compares with the base branch (git fetch origin ${baseBranch}:${baseBranch}).`]);
}
// changeset status reads every pending changeset but finds changed packages against baseBranch, which must exist as
// a local branch; with only the remote one it is told to compare with that (and then reads the changesets added since).
const plan = releasePlan(base === baseBranch ? undefined : base);
const packages = workspacePackages();
const manifests = new Map(packages.map((pkg) => [pkg.name, pkg.manifest]));
const problems = [...checkVersions(plan, manifests), ...checkChangesets(plan, base, packages, new Set(config.ignore ?? []))];

const released = plan.releases.filter((r) => r.type !== 'none');
console.log(`release-check: ${plan.changesets.length} pending changesets (against ${base}); the next release would publish:`);
for (const r of released) console.log(`  ${r.name} ${r.oldVersion} → ${r.newVersion} (${r.type})`);
if (released.length === 0) console.log('  nothing');
if (problems.length > 0) fail(problems);
console.log('release-check: ok');
