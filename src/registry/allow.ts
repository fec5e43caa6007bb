// `registry.allow`: which hosts a registry entry may point the proxy at, so that a write to Redis
// cannot turn the proxy into an open proxy to arbitrary hosts.

import { BlockList, isIP } from 'node:net';

/** Returns a predicate over hostnames, or undefined when the list is absent (everything allowed). */
export function compileAllowList(
  rules: readonly string[] | undefined,
): ((host: string) => boolean) | undefined {
  if (rules === undefined) return undefined;
  const addresses = new BlockList();
  const names = new Set<string>();
  const suffixes: string[] = [];
  for (const rule of rules) {
    const [address, bits] = rule.split('/');
    const family = isIP(address ?? '');
    if (family !== 0 && bits !== undefined)
      addresses.addSubnet(address as string, Number(bits), family === 6 ? 'ipv6' : 'ipv4');
    else if (family !== 0) addresses.addAddress(address as string, family === 6 ? 'ipv6' : 'ipv4');
    else if (rule.startsWith('*.')) suffixes.push(rule.slice(1).toLowerCase());
    else names.add(rule.toLowerCase());
  }
  return (host) => {
    const bare = host.replace(/^\[(.*)\]$/, '$1');
    const family = isIP(bare);
    if (family !== 0) return addresses.check(bare, family === 6 ? 'ipv6' : 'ipv4');
    const lower = bare.toLowerCase();
    return names.has(lower) || suffixes.some((suffix) => lower.endsWith(suffix));
  };
}
