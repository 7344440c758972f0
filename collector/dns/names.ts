// Address → name, learned from DNS answers (collector/dns/learner.ts), asked by the reducer when a
// connection is first counted (collector/reduce.ts PeerNames).
//
// Per address, the latest answers of up to MAX_CLIENTS clients (the newest first): when several
// names point at one address (CDNs, shared load balancers), the name the connection's own pod asked
// wins; another pod's latest answer otherwise. An answer is used for its TTL plus `graceMs`: TTL 0
// and TTLs of a few seconds are common, and the connection is counted at the next read after the
// lookup. The cache holds at most `maxNames` addresses; the least recently answered or asked goes
// first (a JS Map keeps insertion order: touching is delete + set).
import type { PeerNames } from '../reduce.js';

export interface NameCacheConfig {
  /** Addresses held at most. */
  maxNames: number;
  /** Added to every answer's TTL, milliseconds. */
  graceMs: number;
}

export interface NameCacheStats {
  /** Addresses with a name. */
  names: number;
  /** Addresses dropped to stay within maxNames. */
  evictions: number;
}

/** One client's latest answer for an address; `next` is another client's, older. */
interface Held {
  name: string;
  client: string;
  /** Seconds since the epoch, rounded up: a small integer V8 keeps in the object, no boxed number. */
  until: number;
  next: Held | undefined;
}

/** Answers of other clients kept per address besides the newest. */
const MAX_CLIENTS = 4;

export class NameCache implements PeerNames {
  private readonly map = new Map<string, Held>();
  /** Client addresses are few (the pods of a node): one string each, not one per answer. */
  private readonly clients = new Map<string, string>();
  private evicted = 0;

  constructor(
    private readonly config: NameCacheConfig,
    private readonly now: () => number = Date.now,
  ) {}

  /** Records an answer: `client` asked `name` and got `address`, valid for `ttl` seconds. */
  add(address: string, name: string, ttl: number, client: string): void {
    const until = Math.ceil((this.now() + this.config.graceMs) / 1000) + Math.max(0, Math.floor(ttl));
    let c = this.clients.get(client);
    if (c === undefined) {
      if (this.clients.size >= 65_536) this.clients.clear();
      this.clients.set(client, client);
      c = client;
    }
    client = c;
    const first: Held = { name, client, until, next: undefined };
    const head = this.map.get(address);
    if (head !== undefined) {
      // This client's older answer is replaced; other clients' move down, at most MAX_CLIENTS kept.
      this.map.delete(address);
      let tail = first;
      let kept = 1;
      for (let h: Held | undefined = head; h !== undefined && kept < MAX_CLIENTS; h = h.next) {
        if (h.client === client) continue;
        tail.next = h;
        tail = h;
        kept++;
      }
      tail.next = undefined;
    }
    this.map.set(address, first);
    while (this.map.size > this.config.maxNames) {
      this.map.delete(this.map.keys().next().value as string);
      this.evicted++;
    }
  }

  /** The name `client` was last given `ip` for, else another client's latest; '' when none is fresh. */
  nameOf(ip: string, client: string): string {
    const head = this.map.get(ip);
    if (head === undefined) return '';
    const now = this.now() / 1000;
    let any: Held | undefined;
    let fresh = false;
    for (let h: Held | undefined = head; h !== undefined; h = h.next) {
      if (h.until < now) continue;
      fresh = true;
      if (h.client === client) {
        any = h;
        break;
      }
      any ??= h;
    }
    if (!fresh) {
      this.drop(ip);
      return '';
    }
    // Asked: recently useful, moved to the young end.
    this.map.delete(ip);
    this.map.set(ip, head);
    return any!.name;
  }

  /** Drops what has expired (called now and then, so that stale names do not sit until evicted). */
  sweep(): void {
    const now = this.now() / 1000;
    for (const [ip, head] of this.map) {
      let live = false;
      for (let h: Held | undefined = head; h !== undefined; h = h.next) if (h.until >= now) live = true;
      if (!live) this.drop(ip);
    }
  }

  stats(): NameCacheStats {
    return { names: this.map.size, evictions: this.evicted };
  }

  private drop(ip: string): void {
    this.map.delete(ip);
  }
}
