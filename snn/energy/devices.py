"""The built-in hardware profiles and the source of every constant (collected in
``/work/shared/ENERGY_SOURCES.md`` and ``ENERGY_PLATFORM_SOURCES.md``).

Process-level estimates (45 nm), neuromorphic chips (Loihi, Loihi 2, TrueNorth,
SpiNNaker), keras-spiking's CPU device, and one profile per publicly measured case
(``experiments/bench/energy_validation.py``): Loihi (Blouw et al. 2019), the Quadro
K4000, Xeon E5-2630, Jetson TX1 and Movidius NCS of the same paper, the Jetson AGX
Orin and H100 SXM of MLPerf Inference v3.1. A constant fitted to one of those
measurements says so in ``calibrated``; there is at most one per device.

The active (running minus idle) power of a dense processor is a datasheet power times a
stated rule, never a measured running power: codecarbon's rule that a device draws 50 %
of its TDP while it works (for accelerator boards measured alone), or one busy core's
share of the TDP (for a batch-1 stream on a host CPU, where the call is host-bound).
"""
from __future__ import annotations

from snn.energy.profiles import Profile, check_tiers

H = "Horowitz, 'Computing's energy problem', ISSCC 2014 (45 nm)"
HAN = "Han et al., NeurIPS 2015 (32-bit SRAM read 5 pJ, from Horowitz)"
DAV = "Davies et al., 'Loihi', IEEE Micro 2018, Table 2 (pre-silicon minimum values)"
SANA = "SANA-FE (Boyle et al., IEEE TCAD 2025), arch/loihi.yaml @ 8951ab0 (calibrated on Loihi measurements)"
BLOUW = "Blouw et al., 'Benchmarking keyword spotting efficiency on neuromorphic hardware', NICE 2019"
BLOUW_T1 = BLOUW + ", Table 1 (abr/power_benchmarks @ fce95c8, paper/power_summary_acm_format.tex)"
KS = "Hoeppner et al., IEEE TCAS-I 2019, as tabulated in keras-spiking ModelEnergy"
DEG = "Degnan et al., IEEE TVLSI 2016, as tabulated in keras-spiking ModelEnergy ('cpu' device)"
HALA = ("Intel Hala Point, 2024-04-17 (eenewseurope.com, guru3d.com): 1,152 Loihi 2 chips, 2,600 W maximum, "
        "380e12 synaptic ops/s, 240e12 neuron ops/s")
NV_H = "NVIDIA H100 SXM datasheet: 989 TFLOP/s BF16 dense, 1,979 TOPS INT8 dense, 700 W, 3.35 TB/s"
NV_A = "NVIDIA A100 SXM4 80 GB datasheet: 312 TFLOP/s BF16 dense (19.5 FP32), 400 W, 2.04 TB/s"
CC_RULE = "codecarbon's TDP rule (docs: 'CodeCarbon assumes that 50% of the TDP will be the average power')"
LAUNCH = ("CUDA kernel launch ~4-6 us (susun-blog.com, RTX 5070 Ti, CUDA 13); PyTorch '4 us per op on CUDA' "
          "(pytorch/pytorch#82793); ~20 us round trip on a V100 (groundy.com, after NVIDIA Nsight docs)")
ROUND_TRIP = "a CUDA launch-and-synchronise round trip, ~20 us (groundy.com, after NVIDIA's Nsight Systems guide)"
MLPERF = "MLPerf Inference v3.1 closed, NVIDIA (mlcommons/inference_results_v3.1 @ eaf622a)"
BOAVIZTA_LIFE = "Boavizta archetypes: servers 4 years, GPUs 3 years; LLMCarbon: 5 years"
ACT = ("ACT (Gupta et al., ISCA 2022; facebookresearch/ACT @ abc9fbb): CPA = (CI_fab*EPA + GPA97 + MPA) / "
       "yield 0.875, plus 150 g per package")


def _p(name: str, kind: str, description: str, spec: dict[str, tuple]) -> Profile:
    """A built-in profile from ``{key: (value, source[, (low, high)[, calibrated_on]])}``."""
    values, sources, ranges, calibrated = {}, {}, {}, {}
    for k, v in spec.items():
        values[k] = float(v[0])
        sources[k] = v[1]
        if len(v) > 2 and v[2] is not None:
            ranges[k] = (float(v[2][0]), float(v[2][1]))
        if len(v) > 3:
            calibrated[k] = v[3]
    check_tiers(name, kind, set(values))
    return Profile(name, kind, description, values, sources, ranges, calibrated)


KWS = "the keyword spotter of " + BLOUW + " (390-256-256-29 MLP, batch 1)"
_LOIHI_PLATFORM = {
    "static_power_w": (0.029, BLOUW_T1 + ": idle 0.029 W (VDD + VDDM rails: silicon leakage and x86 idling)"),
    "runtime_power_w": (0.070, BLOUW + ", 'Data I/O': the embedded x86 cores that manage the mesh add ~70 mW "
                               "once a model has run"),
    "t_host_step_s": (1.44e-4, "calibrated: 296 inferences/s (" + BLOUW_T1 + ") at 10 steps per inference "
                               "(nengo-loihi keyword-spotting example: p_time=10) = 338 us per step, minus the "
                               "chip's own step for the keyword spotter mapped here (~194 us: its input layer's "
                               "core receives ~50k input spikes x fan-out per step); host I/O and x86 management "
                               "(NxSDK 0.7.5)", None,
                      "Loihi keyword spotter, " + BLOUW_T1 + ": 296 inferences/s"),
    "t_sync_s": (1.0e-6, SANA + ": latency_sync 0.6 us (1 tile) to 1.8 us (29 tiles) per step", (0.6e-6, 1.8e-6)),
    "t_ac_s": (3.8e-9, SANA + ": dense synapse 3.8 ns (sparse 4.7, conv 3.1)", (3.1e-9, 4.7e-9)),
    "t_neuron_s": (9.7e-9, SANA + ": soma access 6.0 ns + update 3.7 ns"),
    "neurons_per_core": (1024, DAV + ": 1,024 compartments per core (SANA-FE max_neurons_supported 1024)"),
    "cores_per_chip": (128, DAV + ": 128 neuromorphic cores per chip"),
    "embodied_kg": (1.08, ACT + ": 60 mm2 at 14 nm = 0.93 kg (Taiwan CI) + 0.15 kg package [derived]; US CI: "
                          "0.92 kg in all", (0.92, 1.08)),
    "service_life_years": (4, BOAVIZTA_LIFE, (3, 5)),
}
_H100_PLATFORM = {
    "active_power_w": (210.0, CC_RULE + ": 350 W running of 700 W TDP, minus the 140 W idle", (160.0, 560.0)),
    "idle_power_w": (140.0, "nvidia-smi '140W / 700W' at 0-4 % utilisation, P0, memory allocated "
                            "(wilicc/gpu-burn#114)"),
    "t_kernel_s": (5e-6, LAUNCH, (4e-6, 20e-6)),
    "embodied_kg": (281.0, "Boavizta GPU model for the H100 SXM 80 GB card (die 120 kg + HBM 137 kg + board, "
                           "case, heatsink) [derived]; LLMCarbon gives 14.65 kg for the die alone (1.8 kg/cm2 x "
                           "814 mm2): report as a range", (14.65, 281.0)),
    "service_life_years": (3, BOAVIZTA_LIFE, (3, 5)),
}

PROFILES: dict[str, Profile] = {p.name: p for p in [
    _p("45nm-fp32", "event", "45 nm CMOS, FP32 arithmetic, SRAM weights (the SNN-paper convention; compute only)", {
        "e_mac": (4.6e-12, H + ": FP32 mult 3.7 pJ + add 0.9 pJ"),
        "e_ac": (0.9e-12, H + ": FP32 add"),
        "e_neuron": (0.9e-12, H + ": one FP32 add per membrane update (assumption: compare and reset free)"),
        "e_mem": (5e-12, HAN, (5e-12, 10e-12)),
    }),
    _p("45nm-int8", "event", "45 nm CMOS, INT8 weights and activations, INT32 membranes, SRAM (compute only)", {
        "e_mac": (0.23e-12, H + ": INT8 mult 0.2 pJ + add 0.03 pJ"),
        "e_ac": (0.03e-12, H + ": INT8 add"),
        "e_neuron": (0.1e-12, H + ": INT32 add per membrane update (assumption: 32-bit membrane)"),
        "e_mem": (5e-12, HAN + " (a 32-bit word read; conservative for 8-bit values)", (5e-12, 10e-12)),
    }),
    _p("loihi", "event", "Intel Loihi (Davies 2018 minimum per-op energies; platform tier from Blouw 2019's "
                         "board measurements and SANA-FE timing)", {
        "e_ac": (23.6e-12, DAV + ": synaptic op 23.6 pJ", (23.6e-12, 35.5e-12)),
        "e_mac": (23.6e-12, "keras-spiking convention: a non-spiking layer computes each connection as one "
                            "synaptic op per step (" + DAV + ")", (23.6e-12, 35.5e-12)),
        "e_neuron": (81e-12, DAV + ": neuron update 81 pJ active (52 pJ inactive)", (51.2e-12, 81e-12)),
        "e_spike": (3.0e-12, DAV + ": tile hop 3.0 pJ (one hop per spike, minimum)", (3.0e-12, 180.3e-12)),
        **_LOIHI_PLATFORM,
    }),
    _p("loihi-sanafe", "event", "Intel Loihi, per-event energies calibrated against measurement (SANA-FE); "
                                "platform tier as 'loihi'", {
        "e_ac": (35.5e-12, SANA + ": dense synapse 35.5 pJ", (24.0e-12, 35.5e-12)),
        "e_mac": (35.5e-12, "keras-spiking convention (one synaptic op per connection per step); " + SANA),
        "e_neuron": (72.8e-12, SANA + ": neuron access 51.2 pJ + update 21.6 pJ"),
        "e_spike": (180.3e-12, SANA + ": spike out 69.3 pJ + axon message out 111 pJ"),
        **_LOIHI_PLATFORM,
    }),
    _p("loihi2", "event", "Intel Loihi 2: no public per-op or static figures; per-op energies are Hala Point's "
                          "system-level ceilings at maximum power (compute tier only, an upper bound)", {
        "e_ac": (6.8e-12, HALA + ": 2,600 W / 380e12 synops/s [derived; includes static power]"),
        "e_mac": (6.8e-12, "keras-spiking convention (one synaptic op per connection per step); " + HALA),
        "e_neuron": (10.8e-12, HALA + ": 2,600 W / 240e12 neuron ops/s [derived; includes static power]"),
        "embodied_kg": (0.87, ACT + ": 31 mm2, Intel 4 taken as the 7 nm class (an assumption) = 0.72 kg (Taiwan "
                              "CI) + 0.15 kg package [derived]; US CI: 0.71 kg", (0.71, 0.87)),
        "service_life_years": (4, BOAVIZTA_LIFE, (3, 5)),
    }),
    _p("truenorth", "event", "IBM TrueNorth: 26 pJ per synaptic event, whole chip including static power", {
        "e_ac": (26e-12, "Merolla et al., Science 2014: 26 pJ per synaptic event (whole chip, incl. static)",
                 (21.7e-12, 26e-12)),
        "e_mac": (26e-12, "keras-spiking convention (one synaptic op per connection per step); Merolla 2014"),
        "e_neuron": (0.0, "Merolla 2014: included in the whole-chip per-event figure"),
    }),
    _p("spinnaker", "event", "SpiNNaker (130 nm ARM many-core)", {
        "e_ac": (13.3e-9, KS), "e_mac": (13.3e-9, "keras-spiking convention; " + KS), "e_neuron": (26e-9, KS)}),
    _p("spinnaker2", "event", "SpiNNaker 2 prototype (28 nm)", {
        "e_ac": (450e-12, KS), "e_mac": (450e-12, "keras-spiking convention; " + KS), "e_neuron": (2.19e-9, KS)}),
    _p("cpu", "event", "Intel i7-4960X, every synop and neuron update one MAC, no event-driven skipping "
                       "(keras-spiking 'cpu' device)", {
        "e_mac": (8.6e-9, DEG), "e_ac": (8.6e-9, DEG), "e_neuron": (8.6e-9, DEG),
        "event_driven": (0, "keras-spiking: non-spiking devices compute every synapse each timestep")}),
    _p("quadro-k4000", "gpu", "NVIDIA Quadro K4000 (Kepler GK106) running TensorFlow 1 in FP32, board power "
                              "(nvidia-smi), as measured by Blouw et al. 2019", {
        "peak_flops": (1.24e12, "768 CUDA cores x 2 FLOP x 811 MHz, FP32 [unverified: no NVIDIA datasheet in "
                                "the stored sources]"),
        "mem_bw": (134e9, "192-bit GDDR5 at 5.6 GT/s [unverified: no NVIDIA datasheet in the stored sources]"),
        "bytes_per_value": (4, "TensorFlow FP32"),
        "board_power_w": (87.0, "power cap '87W' in nvidia-smi on a Quadro K4000 (rcasero/cytometer setup notes, "
                                "driver 375.66); NVIDIA lists 80 W [unverified]", (80.0, 87.0)),
        "active_power_w": (28.5, CC_RULE + ": 43.5 W running of the 87 W cap, minus the 14.97 W idle "
                                 "(an accelerator board measured alone)", (25.0, 28.5)),
        "idle_power_w": (14.97, BLOUW_T1 + ": K4000 idle 14.97 W (nvidia-smi)"),
        "t_call_s": (1.278e-3, "calibrated: 770 inferences/s at batch 1 (" + BLOUW_T1 + ") = 1.298 ms per call, "
                               "minus the kernels and roofline time of the keyword spotter; TensorFlow 1 "
                               "Session.run with feed_dict, transfers and Python post-processing", None,
                     "K4000 keyword spotter, batch 1, " + BLOUW_T1 + ": 770 inferences/s"),
        "t_kernel_s": (5e-6, LAUNCH, (4e-6, 20e-6)),
    }),
    _p("xeon-e5-2630", "cpu", "Intel Xeon E5-2630 (Sandy Bridge-EP, 6 cores) running TensorFlow 1 in FP32, "
                              "package power (RAPL via s-tui), as measured by Blouw et al. 2019", {
        "peak_flops": (2.208e11, "6 cores x 2.3 GHz x 16 FP32 FLOP/cycle (AVX add + mul) [derived; cores and "
                                 "clock from Intel ARK, unverified]"),
        "mem_bw": (42.7e9, "4 channels DDR3-1333 x 8 B [derived, unverified]"),
        "bytes_per_value": (4, "TensorFlow FP32"),
        "board_power_w": (95.0, "codecarbon data/hardware/cpu_power.csv @ b05965e: E5-2630 TDP 95 W (v2 80 W, "
                                "v3/v4 85 W; Blouw does not say which)", (80.0, 95.0)),
        "active_power_w": (15.8, "one busy core at batch 1 (a host-bound TensorFlow call): 95 W TDP / 6 cores "
                                 "[assumption]", (13.3, 15.8)),
        "idle_power_w": (17.01, BLOUW_T1 + ": CPU idle 17.01 W"),
        "t_call_s": (5.20e-4, "calibrated: 1,813.6 inferences/s at batch 1 (" + BLOUW_T1 + ") = 0.551 ms per call, "
                              "minus the kernels and roofline time of the keyword spotter", None,
                     "Xeon keyword spotter, batch 1, " + BLOUW_T1 + ": 1,813.6 inferences/s"),
        "t_kernel_s": (5e-6, "PyTorch eager ~2-7 us per op on a CPU (pytorch/pytorch#41383)", (2e-6, 7e-6)),
    }),
    _p("jetson-tx1", "gpu", "NVIDIA Jetson TX1 (4x Cortex-A57 + 256-core Maxwell GPU) running TensorFlow 1, wall "
                            "power of the developer kit, as measured by Blouw et al. 2019", {
        "peak_flops": (512e9, "256 CUDA cores, 512 GFLOPS FP32 (sysrqmts.com, TechPowerUp-derived) [2nd]"),
        "mem_bw": (25.6e9, "64-bit LPDDR4, 25.6 GB/s (telecomtalk.info) [2nd]"),
        "bytes_per_value": (4, "TensorFlow FP32"),
        "board_power_w": (15.0, "TX1 module datasheet '6-15W' (NVIDIA developer forum, 'TX1 power consumption "
                                "information')", (6.0, 15.0)),
        "active_power_w": (3.75, "one busy CPU core at batch 1 (a host-bound TensorFlow call: 2.4 ms per call "
                                 "against a sub-microsecond roofline): the 15 W module maximum / 4 cores "
                                 "[assumption]", (1.5, 3.75)),
        "idle_power_w": (2.64, BLOUW_T1 + ": Jetson idle 2.64 W (wall meter)"),
        "t_call_s": (2.344e-3, "calibrated: 419 inferences/s at batch 1 (" + BLOUW_T1 + ") = 2.387 ms per call, "
                               "minus the kernels and roofline time of the keyword spotter", None,
                     "Jetson TX1 keyword spotter, batch 1, " + BLOUW_T1 + ": 419 inferences/s"),
        "t_kernel_s": (5e-6, LAUNCH, (4e-6, 20e-6)),
    }),
    _p("movidius-ncs", "vpu", "Intel Movidius Neural Compute Stick (Myriad 2 VPU, 12 SHAVE cores) over USB, "
                              "FP16, USB meter power, as measured by Blouw et al. 2019", {
        "peak_flops": (100e9, "Myriad 2 '80-150 GFLOPS' (adafruitdaily.com 2018-02-23, after pyimagesearch) [2nd]",
                       (80e9, 150e9)),
        "mem_bw": (6.4e9, "assumption: 32-bit LPDDR3-1600 (the NCS has 4 Gbit LPDDR3, movidius.github.io/ncsdk); "
                          "no bandwidth figure found"),
        "bytes_per_value": (2, "NCSDK runs graphs in FP16"),
        "board_power_w": (1.0, "Myriad 2 'consumes only 1W of power' (adafruitdaily.com, after pyimagesearch) [2nd]"),
        "active_power_w": (0.29, CC_RULE + ": 0.5 W running of 1 W, minus the 0.21 W idle"),
        "idle_power_w": (0.21, BLOUW_T1 + ": Movidius idle 0.210 W (USB meter)"),
        "t_call_s": (3.279e-3, "calibrated: 300 inferences/s at batch 1 (" + BLOUW_T1 + ") = 3.33 ms per call "
                             "(USB transfer and NCSDK 1.12 graph execution), minus the roofline time", None,
                     "Movidius NCS keyword spotter, batch 1, " + BLOUW_T1 + ": 300 inferences/s"),
        "t_kernel_s": (0.0, "the stick runs the compiled graph in one call (NCSDK): no per-kernel launch"),
    }),
    _p("jetson-agx-orin", "gpu", "NVIDIA Jetson AGX Orin 64 GB at MLPerf's MaxQ clocks, TensorRT INT8, wall power", {
        "peak_flops": (40.9e12, "GPU 170 INT8 sparse TOPS (85 dense) at 1.3 GHz [unverified], scaled to MaxQ's "
                                "soc_gpu_freq 624.75 MHz (" + MLPERF + ", configs/resnet50/MultiStream) [derived]"),
        "mem_bw": (136.5e9, "soc_emc_freq 2133 MHz (" + MLPERF + " MaxQ config) x 2 x 256-bit LPDDR5 bus "
                            "[derived; bus width unverified; 204.8 GB/s at full clock]", (136.5e9, 204.8e9)),
        "bytes_per_value": (1, "TensorRT INT8 (MLPerf closed division)"),
        "board_power_w": (60.0, "'JAO 64GB Maximum Module Power: Up to 60W' (NVIDIA developer forum quoting the "
                                "module datasheet); 15-60 W configurable", (15.0, 60.0)),
        "active_power_w": (30.0, CC_RULE + ": 30 W of the 60 W module maximum; MLPerf reports wall power only, so "
                                 "idle is not split off", (15.0, 30.0)),
        "idle_power_w": (0.0, "not split off: MLPerf reports wall power only (no sourced idle figure)"),
        "t_call_s": (20e-6, ROUND_TRIP, (5e-6, 20e-6)),
        "t_kernel_s": (5e-6, LAUNCH, (4e-6, 20e-6)),
    }),
    _p("h100-sxm", "gpu", "NVIDIA H100 SXM 80 GB in a DGX H100 (MLPerf MaxQ), TensorRT INT8, with its share of "
                          "the host's power", {
        "peak_flops": (1.979e15, NV_H),
        "mem_bw": (3.35e12, NV_H),
        "bytes_per_value": (1, "TensorRT INT8 (MLPerf closed division)"),
        "board_power_w": (700.0, NV_H + "; a MaxQ ResNet-50 config caps it at 300 W (round unknown)", (300.0, 700.0)),
        **_H100_PLATFORM,
        "host_power_w": (43.75, "2x Xeon Platinum 8480C (" + MLPERF + ", systems/DGX-H100_H100-SXM-80GBx8_TRT_MaxQ"
                                ".json) at " + CC_RULE + " of 350 W TDP [TDP unverified], shared by 8 GPUs"),
        "t_call_s": (20e-6, ROUND_TRIP, (5e-6, 20e-6)),
        "efficiency": (0.508, "calibrated: 474,849 images/s on 8 GPUs (" + MLPERF + ", DGX-H100 MaxQ ResNet-50 "
                              "Offline) against the INT8 roofline of snn's ResNet-50 counts", None,
                       "DGX-H100 MaxQ ResNet-50 Offline, " + MLPERF + ": 474,849 images/s"),
    }),
    _p("gpu-h100", "gpu", "NVIDIA H100 SXM running the network in PyTorch eager, BF16: roofline at the running "
                          "power plus a launch per kernel and idle power", {
        "peak_flops": (989e12, NV_H + " (0.71 pJ/FLOP at board power)", (67e12, 989e12)),
        "board_power_w": (700.0, NV_H),
        "mem_bw": (3.35e12, NV_H),
        "bytes_per_value": (2, "BF16 values", (2, 4)),
        "flops_per_neuron_update": (2, "assumption: a neuron update (add + compare) or ReLU costs 2 FLOPs"),
        **_H100_PLATFORM,
        "t_call_s": (20e-6, ROUND_TRIP, (5e-6, 20e-6)),
    }),
    _p("gpu-a100", "gpu", "NVIDIA A100 SXM4 80 GB, BF16, roofline at board power (compute tier only: no sourced "
                          "idle power, so no total)", {
        "peak_flops": (312e12, NV_A + " (1.28 pJ/FLOP at board power)", (19.5e12, 312e12)),
        "board_power_w": (400.0, NV_A),
        "mem_bw": (2.04e12, NV_A),
        "bytes_per_value": (2, "BF16 values", (2, 4)),
        "flops_per_neuron_update": (2, "assumption: a neuron update (add + compare) or ReLU costs 2 FLOPs"),
        "embodied_kg": (318.0, "Chien et al., HotCarbon 2023: 318 kg CO2e per A100, its share of the instance's "
                               "embodied carbon (via the scope3 methodology page) [2nd]"),
        "service_life_years": (3, BOAVIZTA_LIFE, (3, 5)),
    }),
]}
