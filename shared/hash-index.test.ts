import { describe, expect, it } from 'vitest';
import { seededInt } from '../test/helpers/random.js';
import { grown, HashIndex, SlotIds } from './hash-index.js';

/** The slots the index lists for hash `h`, in probe order. */
function slotsOf(index: HashIndex, h: number): number[] {
  const out: number[] = [];
  for (let s = index.first(h); s >= 0; s = index.next()) out.push(s);
  return out;
}

describe('HashIndex', () => {
  it('lists every slot entered under a hash, and none under another', () => {
    const index = new HashIndex(4);
    index.add(7, 0);
    index.add(7, 1);
    index.add(-3, 2);
    index.add(0xffffffff, 3); // the same 32 bits as -1
    expect(slotsOf(index, 7)).toEqual([0, 1]);
    expect(slotsOf(index, -3)).toEqual([2]);
    expect(slotsOf(index, -1)).toEqual([3]);
    expect(slotsOf(index, 8)).toEqual([]);
    expect(index.size).toBe(4);
  });

  it('stays exact through growth, removal and wrap-around under random churn', () => {
    const rand = seededInt(13);
    const index = new HashIndex(2);
    // Few distinct hashes, many slots each: long probe runs that wrap and cross each other.
    const live = new Map<number, number>();
    let nextSlot = 0;
    for (let step = 0; step < 20000; step++) {
      if (live.size > 0 && rand(3) === 0) {
        const slots = [...live.keys()];
        const slot = slots[rand(slots.length)]!;
        index.remove(live.get(slot)!, slot);
        live.delete(slot);
      } else {
        const h = rand(40) * 0x9e3779b1;
        live.set(nextSlot, h | 0);
        index.add(h, nextSlot++);
      }
      if (step % 997 === 0 || step === 19999) {
        expect(index.size).toBe(live.size);
        const want = new Map<number, number[]>();
        for (const [slot, h] of live) want.set(h, [...(want.get(h) ?? []), slot]);
        for (const [h, slots] of want) expect(slotsOf(index, h).sort((a, b) => a - b)).toEqual(slots);
      }
    }
  });

  it('empties on clear and takes new slots after', () => {
    const index = new HashIndex();
    for (let s = 0; s < 100; s++) index.add(s * 31, s);
    index.clear(10);
    expect(index.size).toBe(0);
    expect(slotsOf(index, 31)).toEqual([]);
    index.add(31, 5);
    expect(slotsOf(index, 31)).toEqual([5]);
  });

  it('ignores the removal of a slot it does not hold', () => {
    const index = new HashIndex();
    index.add(1, 0);
    index.remove(1, 9);
    index.remove(2, 0);
    expect(slotsOf(index, 1)).toEqual([0]);
    expect(index.size).toBe(1);
  });
});

describe('SlotIds', () => {
  it('hands out freed ids first, then new ones, growing the capacity when all are taken', () => {
    const grew: number[] = [];
    const ids = new SlotIds(2, (cap) => grew.push(cap));
    expect([ids.take(), ids.take()]).toEqual([0, 1]);
    expect(grew).toEqual([]);
    ids.release(1);
    expect(ids.take()).toBe(1);
    expect(ids.take()).toBe(2);
    expect(grew).toEqual([4]);
    expect(ids.used).toBe(3);
  });
});

describe('grown', () => {
  it('copies a column into a longer one of the same type, filling the new part', () => {
    const a = grown(Float64Array.of(1, 2), 4, -1);
    expect(a).toBeInstanceOf(Float64Array);
    expect([...a]).toEqual([1, 2, -1, -1]);
    expect([...grown(Uint8Array.of(7), 3)]).toEqual([7, 0, 0]);
  });
});
