"""The study's inputs, each with the public source it comes from (docs/study.md lists them).

Numbers copied from a source are facts; everything marked "our assumption" is a round choice of
ours that the sensitivity table varies. Nothing here is fitted to the whitepaper's results.
"""

from __future__ import annotations

import numpy as np

SLOT_H = 0.25
DAY_SLOTS = 96

# NEDU/MFFBAS standard profile E1A (households, <= 3x25 A, single tariff) of 2018, as published
# by EDSN: the share of the annual consumption in each quarter-hour, here x 1e8, for the week
# Monday 8 - Sunday 14 January 2018 (local time). Source: the 2018 E1A file in the public
# quintel/etdataset-public repository (curves/demand/households/appliances/data/nl/2018/input).
E1A_WEEK_2018_01_08 = (
    2361, 2201, 2046, 1916, 1795, 1695, 1610, 1550, 1500, 1465, 1440, 1425, 1405, 1390, 1385, 1385,
    1390, 1405, 1430, 1455, 1495, 1530, 1585, 1675, 1805, 1966, 2156, 2371, 2606, 2821, 3006, 3151,
    3281, 3406, 3541, 3661, 3771, 3851, 3931, 3971, 3976, 3916, 3856, 3801, 3806, 3841, 3911, 3956,
    3976, 3961, 3906, 3821, 3731, 3641, 3566, 3511, 3491, 3486, 3496, 3506, 3506, 3516, 3546, 3616,
    3736, 3931, 4206, 4556, 4926, 5256, 5527, 5696, 5786, 5821, 5831, 5861, 5920, 5995, 6015, 5950,
    5791, 5592, 5376, 5191, 5026, 4891, 4746, 4586, 4416, 4226, 4011, 3771, 3506, 3216, 2931, 2661,
    2416, 2191, 1996, 1841, 1725, 1640, 1565, 1515, 1475, 1460, 1450, 1435, 1420, 1400, 1395, 1395,
    1400, 1415, 1440, 1465, 1495, 1525, 1575, 1665, 1790, 1946, 2126, 2316, 2521, 2736, 2931, 3071,
    3161, 3216, 3271, 3336, 3411, 3491, 3536, 3526, 3486, 3461, 3446, 3441, 3411, 3416, 3411, 3416,
    3416, 3436, 3451, 3436, 3406, 3371, 3356, 3341, 3336, 3316, 3296, 3291, 3306, 3331, 3386, 3466,
    3581, 3756, 3986, 4281, 4631, 4976, 5266, 5462, 5567, 5606, 5621, 5651, 5681, 5706, 5706, 5681,
    5596, 5447, 5286, 5136, 5011, 4891, 4776, 4621, 4421, 4191, 3961, 3711, 3446, 3166, 2891, 2631,
    2396, 2181, 1991, 1831, 1710, 1625, 1565, 1520, 1490, 1475, 1460, 1445, 1430, 1420, 1400, 1395,
    1395, 1410, 1425, 1435, 1445, 1475, 1535, 1630, 1740, 1881, 2031, 2231, 2461, 2711, 2941, 3136,
    3296, 3416, 3496, 3536, 3551, 3551, 3571, 3611, 3641, 3631, 3591, 3526, 3461, 3416, 3431, 3491,
    3541, 3556, 3546, 3541, 3536, 3556, 3571, 3601, 3626, 3641, 3616, 3571, 3541, 3536, 3576, 3641,
    3746, 3916, 4176, 4506, 4891, 5256, 5582, 5796, 5930, 5970, 5975, 5965, 5960, 5935, 5881, 5776,
    5621, 5426, 5216, 5026, 4886, 4776, 4666, 4526, 4366, 4186, 3991, 3771, 3531, 3276, 3021, 2756,
    2501, 2271, 2071, 1916, 1780, 1680, 1605, 1555, 1520, 1495, 1470, 1450, 1430, 1420, 1415, 1415,
    1420, 1425, 1435, 1435, 1450, 1480, 1545, 1635, 1765, 1926, 2111, 2316, 2546, 2756, 2946, 3081,
    3186, 3261, 3336, 3401, 3476, 3561, 3616, 3626, 3611, 3581, 3546, 3501, 3471, 3481, 3531, 3601,
    3656, 3661, 3616, 3546, 3501, 3491, 3491, 3506, 3516, 3526, 3521, 3521, 3536, 3556, 3576, 3636,
    3746, 3916, 4166, 4466, 4811, 5146, 5426, 5621, 5691, 5681, 5627, 5607, 5626, 5661, 5666, 5607,
    5477, 5301, 5131, 4976, 4841, 4716, 4586, 4446, 4291, 4126, 3946, 3736, 3491, 3221, 2961, 2711,
    2486, 2276, 2086, 1926, 1800, 1710, 1630, 1560, 1500, 1460, 1425, 1405, 1395, 1395, 1395, 1395,
    1395, 1400, 1410, 1420, 1435, 1475, 1530, 1615, 1725, 1856, 2026, 2241, 2466, 2686, 2881, 3056,
    3206, 3336, 3456, 3566, 3656, 3726, 3776, 3806, 3796, 3756, 3691, 3661, 3661, 3686, 3736, 3791,
    3841, 3841, 3811, 3756, 3711, 3651, 3601, 3571, 3571, 3596, 3616, 3611, 3601, 3611, 3646, 3726,
    3861, 4066, 4316, 4616, 4931, 5231, 5467, 5621, 5696, 5686, 5626, 5556, 5527, 5551, 5591, 5571,
    5482, 5331, 5166, 4996, 4841, 4706, 4606, 4516, 4436, 4326, 4196, 4011, 3806, 3566, 3326, 3051,
    2776, 2521, 2306, 2126, 1961, 1821, 1705, 1620, 1560, 1515, 1490, 1475, 1460, 1450, 1435, 1425,
    1420, 1410, 1415, 1415, 1420, 1430, 1450, 1480, 1515, 1560, 1620, 1700, 1821, 1966, 2161, 2376,
    2621, 2866, 3096, 3301, 3466, 3596, 3696, 3791, 3911, 4021, 4121, 4141, 4131, 4136, 4171, 4186,
    4161, 4116, 4101, 4131, 4181, 4201, 4171, 4121, 4076, 4046, 3996, 3946, 3921, 3931, 3926, 3956,
    4016, 4176, 4406, 4711, 5011, 5286, 5472, 5577, 5597, 5587, 5582, 5592, 5596, 5591, 5576, 5507,
    5381, 5226, 5076, 4921, 4776, 4626, 4516, 4426, 4336, 4231, 4096, 3941, 3761, 3561, 3336, 3101,
    2851, 2611, 2406, 2221, 2051, 1911, 1785, 1700, 1630, 1585, 1545, 1515, 1495, 1470, 1455, 1445,
    1445, 1425, 1420, 1415, 1420, 1420, 1430, 1435, 1455, 1480, 1515, 1570, 1645, 1745, 1891, 2066,
    2261, 2451, 2651, 2846, 3036, 3231, 3421, 3631, 3786, 3911, 4011, 4101, 4176, 4226, 4281, 4331,
    4371, 4366, 4336, 4291, 4256, 4246, 4246, 4221, 4171, 4126, 4081, 4026, 3951, 3901, 3876, 3901,
    3946, 4041, 4221, 4511, 4871, 5246, 5532, 5706, 5766, 5771, 5751, 5731, 5716, 5701, 5657, 5572,
    5457, 5316, 5141, 4996, 4866, 4781, 4686, 4566, 4401, 4196, 3951, 3666, 3351, 3036, 2741, 2486,
)
E1A_SOURCE = ("NEDU/MFFBAS standard profile E1A 2018 (EDSN), week of 8-14 January 2018, from the public "
              "quintel/etdataset-public repository")

# Average annual electricity consumption of a Dutch household used by CBS for the 2018 and 2019
# consumer price index (CBS news release 2019/07, "Gemiddeld jaarverbruik").
HOUSEHOLD_KWH_PER_YEAR = 3034.0
HOUSEHOLD_KWH_SOURCE = "CBS: 3,034 kWh per household per year (average used for the 2018-2019 CPI)"

# Dutch low-voltage streets and transformers were sized for about 1.5 kW of simultaneous load per
# house (energiepodium.nl / hier.nu on the low-voltage grid): the "DSO design" base-load case.
DSO_DESIGN_KW_PER_HOUSEHOLD = 1.5
DSO_DESIGN_SOURCE = "about 1.5 kW simultaneous load per house as the design basis of Dutch LV grids (energiepodium.nl)"

# EPEX day-ahead price for the Netherlands on Monday 24 November 2025, EUR/kWh excluding VAT, per
# local hour (the "Beursprijs" component of Essent's dynamic tariff for that day, as recorded in the
# public Home Assistant test fixture tests/components/essent/fixtures/prices.json).
DAY_AHEAD_EUR_KWH_2025_11_24 = (
    0.07176, 0.06903, 0.07020, 0.06968, 0.06882, 0.07642, 0.08937, 0.08906,
    0.09455, 0.10114, 0.11274, 0.12316, 0.12380, 0.13917, 0.14541, 0.17505,
    0.20277, 0.23750, 0.20999, 0.17462, 0.14198, 0.12779, 0.11652, 0.10040,
)
DAY_AHEAD_SOURCE = ("EPEX day-ahead NL, Monday 24 November 2025, hourly (Essent dynamic tariff market-price "
                    "component as recorded in a public Home Assistant test fixture)")


def e1a_week_kw(households: float, kwh_per_year: float) -> np.ndarray:
    """The E1A week as kW for `households` homes of `kwh_per_year` each (672 quarter-hours, Monday first)."""
    share = np.asarray(E1A_WEEK_2018_01_08, dtype=float) * 1e-8
    return share * households * kwh_per_year / SLOT_H


def day_ahead_slots() -> np.ndarray:
    """The day-ahead price per quarter-hour of one day (hourly prices repeated)."""
    return np.repeat(np.asarray(DAY_AHEAD_EUR_KWH_2025_11_24, dtype=float), 4)
