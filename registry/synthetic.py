"""A synthetic Hà Nội: residents, households, checkpoints and late-2021 vaccination.

Deterministic for a seed (each chunk draws from ``default_rng([seed, chunk])``), columnar
(numpy) so that 8 million residents stay within minutes. The shapes are stated with
their sources where there is one; where there is none they are labelled as assumptions.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np

from registry.ids import century_digit
from registry.reference import hanoi_districts, hanoi_wards, provinces, vn_names

# Age bands (years) and shares, shaped on Vietnam's 2019 census pyramid (assumption:
# rounded by hand; Hà Nội's is close to the national one).
AGE_BANDS = [
    (0, 5, 0.080),
    (5, 12, 0.115),
    (12, 18, 0.085),
    (18, 30, 0.180),
    (30, 45, 0.235),
    (45, 60, 0.170),
    (60, 75, 0.095),
    (75, 95, 0.040),
]
# Household sizes (2019 census: mean ≈ 3.5 in Hà Nội; assumption for the spread).
HOUSEHOLD_SIZES = ([1, 2, 3, 4, 5, 6], [0.11, 0.20, 0.23, 0.26, 0.12, 0.08])
# Late-2021 coverage (assumption after Hà Nội's reports for end of November 2021:
# ~all adults had one dose, most had two; 12–17 started in November).
COVERAGE = {"adult_one": 0.97, "adult_two": 0.92, "teen_one": 0.70, "teen_two": 0.20}
VACCINES = (
    ["AstraZeneca", "Pfizer", "Vero Cell", "Moderna", "Sputnik V"],
    [0.42, 0.27, 0.21, 0.07, 0.03],
)
RECOVERED_SHARE = 0.003
CHECKPOINTS_PER_MILLION = 5000
CHECKPOINT_TYPES = {  # kind: (share, capacity range)
    "shop": (0.33, (5, 60)),
    "restaurant": (0.12, (10, 150)),
    "office": (0.15, (20, 800)),
    "market": (0.05, (100, 3000)),
    "school": (0.06, (200, 2500)),
    "hospital": (0.01, (200, 5000)),
    "gate": (0.02, (500, 20000)),
    "home": (0.22, (1, 12)),
    "station": (0.04, (200, 8000)),
}
HOME_PROVINCE = "001"
HOME_SHARE = 0.85  # assumption: most residents' births were registered in Hà Nội


@dataclass(frozen=True, slots=True)
class SeedPlan:
    residents: int
    seed: int = 1
    as_of: date = date(2021, 11, 30)
    chunk: int = 100_000


@dataclass
class ResidentChunk:
    """Columns of one chunk of residents (same length each)."""

    ids: list[str]
    names: list[str]
    dob: list[date]
    gender: list[str]
    province: list[str]
    district: list[str]
    ward: list[str]
    address: list[str]
    household: list[str]
    doses: list[list[tuple[date, str]]]
    recovered_at: list[datetime | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    checkpoint_id: str
    name: str
    type: str
    district: str
    ward: str
    capacity: int


def _weighted(
    rng: np.random.Generator, n: int, weights: list[float] | tuple[float, ...]
) -> np.ndarray:
    p = np.asarray(weights, dtype=float)
    return rng.choice(len(p), size=n, p=p / p.sum())


class SyntheticCity:
    """Generates the residents of a plan chunk by chunk (IDs unique across chunks)."""

    def __init__(self, plan: SeedPlan) -> None:
        self.plan = plan
        self._serial_base: dict[str, int] = {}
        wards = hanoi_wards()
        self.wards = [w for d in sorted(wards) for w in wards[d]]
        others = sorted(c for c in provinces() if c != HOME_PROVINCE)
        self.other_provinces = np.array(others)
        self.names = vn_names()

    def chunks(self) -> Iterator[ResidentChunk]:
        plan = self.plan
        for index, start in enumerate(range(0, plan.residents, plan.chunk)):
            yield self._chunk(index, min(plan.chunk, plan.residents - start))

    def _chunk(self, index: int, m: int) -> ResidentChunk:
        rng = np.random.default_rng([self.plan.seed, index])
        sizes_v, sizes_p = HOUSEHOLD_SIZES
        hh_sizes = np.asarray(sizes_v)[_weighted(rng, m, sizes_p)]
        hh_sizes = hh_sizes[: int(np.searchsorted(np.cumsum(hh_sizes), m)) + 1]
        hh_sizes[-1] -= int(hh_sizes.sum()) - m
        hh_of = np.repeat(np.arange(len(hh_sizes)), hh_sizes)
        hh_ward = rng.integers(0, len(self.wards), size=len(hh_sizes))
        hh_house = rng.integers(1, 300, size=len(hh_sizes))
        hh_group = rng.integers(1, 40, size=len(hh_sizes))
        hh_family = _weighted(rng, len(hh_sizes), self.names.family[1])

        band = _weighted(rng, m, [b[2] for b in AGE_BANDS])
        lo = np.array([b[0] for b in AGE_BANDS])[band]
        hi = np.array([b[1] for b in AGE_BANDS])[band]
        age_days = ((lo + rng.random(m) * (hi - lo)) * 365.25).astype(int)
        as_of = np.datetime64(self.plan.as_of, "D")
        dob = as_of - age_days.astype("timedelta64[D]")
        years = dob.astype("datetime64[Y]").astype(int) + 1970
        female = rng.random(m) < 0.503
        home = rng.random(m) < HOME_SHARE
        prov = np.where(
            home, HOME_PROVINCE, self.other_provinces[rng.integers(0, len(self.other_provinces), m)]
        )
        # members mostly share the household's family name (assumption: 80%)
        own_family = _weighted(rng, m, self.names.family[1])
        family_idx = np.where(rng.random(m) < 0.8, hh_family[hh_of], own_family)

        ids = self._ids(prov, years, female)
        names = self._names(rng, family_idx, female)
        doses = self._doses(rng, age_days)
        recovered = rng.random(m) < RECOVERED_SHARE
        rec_day = rng.integers(0, 140, size=m)

        ward_objs = [self.wards[i] for i in hh_ward]
        addresses = [
            f"Số {h}, Tổ {g}, {w.name}, {w.district}, Hà Nội"
            for h, g, w in zip(hh_house.tolist(), hh_group.tolist(), ward_objs, strict=True)
        ]
        hh_ids = [f"HH{self.plan.seed}-{index:04d}-{h:06d}" for h in range(len(hh_sizes))]
        members = hh_of.tolist()
        start = datetime(2021, 7, 1, tzinfo=UTC)
        return ResidentChunk(
            ids=ids,
            names=names,
            dob=dob.astype(object).tolist(),
            gender=["Nữ" if f else "Nam" for f in female.tolist()],
            province=prov.tolist(),
            district=[ward_objs[h].district for h in members],
            ward=[ward_objs[h].name for h in members],
            address=[addresses[h] for h in members],
            household=[hh_ids[h] for h in members],
            doses=doses,
            recovered_at=[
                start + timedelta(days=d) if r else None
                for r, d in zip(recovered.tolist(), rec_day.tolist(), strict=True)
            ],
        )

    def _ids(self, prov: np.ndarray, years: np.ndarray, female: np.ndarray) -> list[str]:
        g = (years // 100 - 19) * 2 + female.astype(int)
        prefixes = np.char.add(
            np.char.add(prov.astype(str), g.astype(str)),
            np.char.zfill((years % 100).astype(str), 2),
        )
        uniq, inverse = np.unique(prefixes, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        counts = np.bincount(inverse)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order)) - np.repeat(starts, counts)
        base = np.array([self._serial_base.get(p, 0) for p in uniq.tolist()])
        counter = base[inverse] + rank
        for p, c in zip(uniq.tolist(), (base + counts).tolist(), strict=True):
            self._serial_base[p] = c
        if counter.max(initial=0) >= 1_000_000:
            raise ValueError("more than a million residents share an ID prefix")
        # An affine map with a multiplier coprime to 10^6 is a permutation of 0..999999:
        # serials look random, never repeat within a prefix.
        offset = np.array([hash_prefix(p) for p in uniq.tolist()])[inverse]
        serial = (counter * 7919 + offset) % 1_000_000
        return np.char.add(prefixes, np.char.zfill(serial.astype(str), 6)).tolist()

    def _names(
        self, rng: np.random.Generator, family_idx: np.ndarray, female: np.ndarray
    ) -> list[str]:
        t = self.names
        fam = np.array(t.family[0])[family_idx]
        out = np.empty(len(female), dtype=object)
        for gender, mask in (("Nữ", female), ("Nam", ~female)):
            k = int(mask.sum())
            mid = np.array(t.middle[gender][0])[_weighted(rng, k, t.middle[gender][1])]
            giv = np.array(t.given[gender][0])[_weighted(rng, k, t.given[gender][1])]
            out[mask] = [
                f"{a} {b} {c}"
                for a, b, c in zip(fam[mask].tolist(), mid.tolist(), giv.tolist(), strict=True)
            ]
        return out.tolist()

    def _doses(
        self, rng: np.random.Generator, age_days: np.ndarray
    ) -> list[list[tuple[date, str]]]:
        m = len(age_days)
        age = age_days / 365.25
        adult, teen = age >= 18, (age >= 12) & (age < 18)
        u1, u2 = rng.random(m), rng.random(m)
        one = (adult & (u1 < COVERAGE["adult_one"])) | (teen & (u1 < COVERAGE["teen_one"]))
        two = one & (
            (adult & (u2 < COVERAGE["adult_two"] / COVERAGE["adult_one"]))
            | (teen & (u2 < COVERAGE["teen_two"] / COVERAGE["teen_one"]))
        )
        first = np.datetime64("2021-06-01") + rng.integers(0, 110, m).astype("timedelta64[D]")
        first = np.where(
            teen,
            np.datetime64("2021-11-01") + rng.integers(0, 20, m).astype("timedelta64[D]"),
            first,
        )
        second = first + rng.integers(28, 60, m).astype("timedelta64[D]")
        as_of = np.datetime64(self.plan.as_of, "D")
        two &= second <= as_of
        vac = np.array(VACCINES[0])[_weighted(rng, m, VACCINES[1])]
        out: list[list[tuple[date, str]]] = []
        f_l, s_l, v_l = first.astype(object).tolist(), second.astype(object).tolist(), vac.tolist()
        for i, (o, t) in enumerate(zip(one.tolist(), two.tolist(), strict=True)):
            if not o:
                out.append([])
            elif t:
                out.append([(f_l[i], v_l[i]), (s_l[i], v_l[i])])
            else:
                out.append([(f_l[i], v_l[i])])
        return out


def hash_prefix(prefix: str) -> int:
    """A stable (not Python-hash-randomised) offset per ID prefix."""
    h = 0
    for ch in prefix:
        h = (h * 131 + ord(ch)) % 1_000_003
    return h


def checkpoints(plan: SeedPlan) -> list[Checkpoint]:
    """~5,000 checkpoints per million residents, typed, with capacities, in every ward."""
    n = max(10, round(plan.residents * CHECKPOINTS_PER_MILLION / 1_000_000))
    rng = np.random.default_rng([plan.seed, 1_000_000])
    wards = hanoi_wards()
    flat = [w for d in sorted(wards) for w in wards[d]]
    codes = {d.name: d.code for d in hanoi_districts().values()}
    types = list(CHECKPOINT_TYPES)
    kinds = _weighted(rng, n, [CHECKPOINT_TYPES[t][0] for t in types]).tolist()
    where = rng.integers(0, len(flat), size=n).tolist()
    u = rng.random(n).tolist()
    out = []
    for i, (k, w, x) in enumerate(zip(kinds, where, u, strict=True)):
        kind, ward = types[k], flat[w]
        lo, hi = CHECKPOINT_TYPES[kind][1]
        out.append(
            Checkpoint(
                f"HN{codes[ward.district]}-{kind}-{i:06d}",
                f"{kind} {i} {ward.name}",
                kind,
                ward.district,
                ward.name,
                int(lo + x * (hi - lo)),
            )
        )
    return out


def id_is_consistent(number: str, dob: date, gender: str) -> bool:
    """Used by tests: the generated ID encodes the resident's own birth year and gender."""
    return (
        number[3] == str(century_digit(dob.year, gender)) and number[4:6] == f"{dob.year % 100:02d}"
    )
