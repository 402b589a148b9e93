/**
 * The short in-process reuse of served tokens (issue: one Backstage request often needs the
 * same downstream token several times; the broker stays the real cache).
 *
 * Owns: the reuse key and the bounded map. A key is a SHA-256 digest over the principal of the
 * Backstage credentials (the user's entity ref, or the service subject), the digest of the
 * user's Keycloak token when one is sent, the target and the scope: two users never share an
 * entry, and neither a token nor an entity ref is kept in clear in a key. Credentials with no
 * usable principal (`none`) get no key, so nothing is reused for them.
 *
 * @packageDocumentation
 */

import { createHash } from 'node:crypto';

import type { BackstageCredentials } from '@backstage/backend-plugin-api';

/** Who the credentials are, as a stable string; undefined when they name nobody. */
export function principalOf(credentials: BackstageCredentials): string | undefined {
  const p = credentials.principal as
    | { type?: unknown; userEntityRef?: unknown; subject?: unknown }
    | undefined;
  if (p?.type === 'user' && typeof p.userEntityRef === 'string' && p.userEntityRef) {
    return `user\u0000${p.userEntityRef}`;
  }
  if (p?.type === 'service' && typeof p.subject === 'string' && p.subject) {
    return `service\u0000${p.subject}`;
  }
  return undefined;
}

function sha256(s: string): string {
  return createHash('sha256').update(s, 'utf8').digest('base64url');
}

/** The reuse key for one request, or undefined when the request must not be reused. */
export function reuseKey(
  credentials: BackstageCredentials,
  target: string,
  scope: string | undefined,
  keycloakToken: string | undefined,
): string | undefined {
  const principal = principalOf(credentials);
  if (principal === undefined) return undefined;
  return sha256(
    JSON.stringify([
      principal,
      keycloakToken === undefined ? null : sha256(keycloakToken),
      target,
      scope ?? null,
    ]),
  );
}

interface Entry<T> {
  value: T;
  until: number;
}

/** A bounded map of values that are served until their own deadline (epoch ms). */
export class ReuseMap<T> {
  private readonly entries = new Map<string, Entry<T>>();

  constructor(
    private readonly maxEntries: number,
    private readonly now: () => number = Date.now,
  ) {}

  get(key: string): T | undefined {
    const e = this.entries.get(key);
    if (e === undefined) return undefined;
    if (e.until <= this.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return e.value;
  }

  set(key: string, value: T, until: number): void {
    if (this.maxEntries <= 0 || until <= this.now()) return;
    this.entries.delete(key);
    if (this.entries.size >= this.maxEntries) this.evict();
    this.entries.set(key, { value, until });
  }

  get size(): number {
    return this.entries.size;
  }

  /** Drops expired entries; if none was, the oldest inserted one. */
  private evict(): void {
    const now = this.now();
    for (const [k, e] of this.entries) {
      if (e.until <= now) this.entries.delete(k);
    }
    if (this.entries.size >= this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (!oldest.done) this.entries.delete(oldest.value);
    }
  }
}
