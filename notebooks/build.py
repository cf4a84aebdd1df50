"""Write the notebooks (without outputs) from the cells below, or run them.

    python notebooks/build.py write             # notebooks/*.ipynb from this file
    python notebooks/build.py run [--tiny] [--figures DIR] [--outputs DIR] [NAME ...]   # execute them

Each notebook reads MNIST_DIFFUSION_NOTEBOOK_SIZE (`tiny` shrinks every N and step count so the test suite
runs it in seconds) and MNIST_DIFFUSION_NOTEBOOK_FIGURES (where its figures go; default out/notebooks).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent

SETUP = '''\
import os
import time
from pathlib import Path

import mnist_diffusion as md  # before torch: it sets how OpenMP's idle threads wait, read once when torch loads
import numpy as np
import torch
from IPython.display import Image, display
from mnist_diffusion import figures

TINY = os.environ.get("MNIST_DIFFUSION_NOTEBOOK_SIZE", "full") == "tiny"  # the test suite's quick run
FIGURES = Path(os.environ.get("MNIST_DIFFUSION_NOTEBOOK_FIGURES", "../out/notebooks")) / "{folder}"
FIGURES.mkdir(parents=True, exist_ok=True)


def size(full, tiny):
    """The full-size value, or the tiny one for the quick run."""
    return tiny if TINY else full


def show(path):
    display(Image(filename=str(path)))


print("tiny run" if TINY else "full run", "| figures in", FIGURES)'''


# ---- 01: the seed, retold (English and Korean markdown, one code) --------------------------------------------------
SEED = [
    ("md", """\
# 1. The seed, retold: corrupt, denoise, repeat

This notebook retells the tutorial the project began from, *Generating MNIST with a diffusion model*
("Diffusion Model로 MNIST 생성해보기", the first of a four-part series), with every figure made live. Its
sections and code blocks appear here in the same order:

| the seed | here |
|---|---|
| "Model structure": the `BasicUNet` class | section 2 (`mnist_diffusion.models.basic_unet.BasicUNet`, the same layers) |
| "Adding noise": `noisy_x = (1-amount)*x + amount*noise` and `def corrupt(x, amount)` | section 1 (`mnist_diffusion.diffusion.tutorial.corrupt`) |
| the corruption test plot (figure 1) | section 1 |
| "Training process": the train step | section 3, written out as in the seed |
| "Training results": input / corrupted / prediction (figure 2) | section 4 |
| "Diffusion process": the 5-step loop with `mix_factor` and its plot (figure 3) | section 5 |
| (the course's loss curve) | section 3 |

Everything runs on a laptop CPU: training the toy model takes a minute or two. Digits are drawn white on
black, as MNIST stores them (the seed's plots used the inverted `Greys` map).""",
     """\
# 1. 시드 튜토리얼 다시 보기: 노이즈 추가, 복원, 반복

이 노트북은 이 프로젝트의 출발점인 튜토리얼 *Diffusion Model로 MNIST 생성해보기*(4부작 중 1편)를 다시
따라가며, 모든 그림을 직접 실행해서 만든다. 튜토리얼의 절과 코드 블록은 같은 순서로 나온다.

| 튜토리얼 | 이 노트북 |
|---|---|
| "모델 구조": `BasicUNet` 클래스 | 2절 (`mnist_diffusion.models.basic_unet.BasicUNet`, 같은 층 구성) |
| "노이즈 추가": `noisy_x = (1-amount)*x + amount*noise` 와 `def corrupt(x, amount)` | 1절 (`mnist_diffusion.diffusion.tutorial.corrupt`) |
| 노이즈 테스트 그림 (그림 1) | 1절 |
| "학습 프로세스": train step | 3절, 튜토리얼과 같은 코드 |
| "학습 결과": 입력 / 노이즈 / 예측 (그림 2) | 4절 |
| "Diffusion 프로세스": `mix_factor` 를 쓰는 5단계 루프와 그 그림 (그림 3) | 5절 |
| (강좌의 loss 곡선) | 3절 |

모든 것이 노트북 CPU에서 돌아간다. 작은 모델 학습은 1~2분이면 된다. 숫자는 MNIST가 저장한 그대로
검은 바탕에 흰 글씨로 그린다 (튜토리얼의 그림은 반전된 `Greys` 컬러맵을 썼다)."""),
    ("code", SETUP.format(folder="01")),
    ("md", """\
## 1. Corrupting digits with noise

The seed's data are MNIST digits in [0, 1]. Its noise is **uniform**, `torch.rand_like(x)`, and `amount`
blends image and noise: amount 0 is the clean digit, amount 1 pure noise. The project's `corrupt` is the
seed's function (with an optional generator, so the figure is the same every run):""",
     """\
## 1. 숫자 이미지에 노이즈 추가하기

튜토리얼의 데이터는 [0, 1] 범위의 MNIST 숫자다. 노이즈는 **균등분포** `torch.rand_like(x)` 이고,
`amount` 가 이미지와 노이즈를 섞는다. amount 0은 깨끗한 숫자, 1은 순수한 노이즈다. 이 프로젝트의
`corrupt` 는 튜토리얼의 함수와 같다 (그림이 매번 같도록 generator를 선택적으로 받는다)."""),
    ("code", '''\
import inspect

from mnist_diffusion.data import load_split, to_float
from mnist_diffusion.diffusion.tutorial import corrupt

images, labels = load_split("mnist", "train")   # uint8 (60000, 28, 28), from the packaged MNIST
x = to_float(images[:8], "unit")                 # (8, 1, 28, 28) in [0, 1], what the seed's DataLoader gives
print(images.shape, images.dtype, "->", tuple(x.shape), float(x.min()), float(x.max()))
print(inspect.getsource(corrupt))'''),
    ("md", """\
The seed's first figure: the batch, and the same batch corrupted with `amount = torch.linspace(0, 1, 8)`,
left to right. Each column is labelled with its amount.""",
     """\
튜토리얼의 첫 번째 그림: 배치와, 같은 배치를 `amount = torch.linspace(0, 1, 8)` 로 왼쪽에서 오른쪽으로
노이즈를 늘려 가며 섞은 것. 각 열 위에 amount를 적었다."""),
    ("code", '''show(figures.corruption_figure(x, FIGURES / "corruption.png"))'''),
    ("md", """\
## 2. The network: `BasicUNet`

The seed's U-Net, layer for layer: three 5x5 convolutions down (max-pooling after the first two, whose
outputs are kept), three up (upsampling, then adding the kept output), SiLU after every convolution. It gets
**no noise level**: it must guess from the image how noisy it is.""",
     """\
## 2. 신경망: `BasicUNet`

튜토리얼의 U-Net을 층 하나하나 그대로 옮겼다. 내려가는 5x5 합성곱 세 개(앞의 두 개 뒤에 max-pooling,
그 출력을 저장), 올라가는 세 개(upsampling 후 저장해 둔 출력을 더함), 모든 합성곱 뒤에 SiLU.
노이즈 비율은 **입력으로 받지 않는다**. 이미지만 보고 얼마나 노이즈가 섞였는지 알아내야 한다."""),
    ("code", '''\
from mnist_diffusion.models.basic_unet import BasicUNet

net = BasicUNet()
print(net)
print(f"{sum(p.numel() for p in net.parameters()):,} parameters; input {tuple(x.shape)} -> output "
      f"{tuple(net(x).shape)}")'''),
    ("md", """\
## 3. Training: predict the clean digit

The seed's train step, as written there: draw `noise_amount ~ U(0, 1)` per image, corrupt, let the network
predict the clean image, and regress it onto the clean image with MSE (this is **x0 prediction**; DDPM, in
notebook 2, predicts the noise instead). Adam at 1e-3, batch 128. The seed trains 3 epochs; here one pass over
part of the training set keeps it to a minute or two (`md.train("seed")` runs the full recipe).""",
     """\
## 3. 학습: 깨끗한 숫자를 예측하기

튜토리얼의 train step 그대로다. 이미지마다 `noise_amount ~ U(0, 1)` 를 뽑아 노이즈를 섞고, 신경망이
깨끗한 이미지를 예측하게 한 뒤, 깨끗한 이미지와의 MSE로 학습한다 (**x0 예측**. 2번 노트북의 DDPM은
대신 노이즈를 예측한다). Adam 1e-3, 배치 128. 튜토리얼은 3 epoch를 학습하지만, 여기서는 학습 데이터의
일부를 한 번 훑어 1~2분 안에 끝낸다 (`md.train("seed")` 가 전체 레시피를 실행한다)."""),
    ("code", '''\
torch.manual_seed(0)
train_x = to_float(images[: size(30_000, 256)], "unit")
batch_size = 128
net = BasicUNet()
loss_fn = torch.nn.MSELoss()
opt = torch.optim.Adam(net.parameters(), lr=1e-3)

losses, started = [], time.perf_counter()
order = torch.randperm(len(train_x))             # the seed's DataLoader(shuffle=True)
for start in range(0, len(train_x), batch_size):
    x_batch = train_x[order[start:start + batch_size]]
    noise_amount = torch.rand(x_batch.shape[0])  # 0~1, one per image
    noisy_x = corrupt(x_batch, noise_amount)
    pred = net(noisy_x)                          # noisy x -> denoised x
    loss = loss_fn(pred, x_batch)                # MSE against the clean x
    opt.zero_grad()
    loss.backward()
    opt.step()
    losses.append(loss.item())
seconds = time.perf_counter() - started
print(f"{len(losses)} steps on {len(train_x):,} images in {seconds:.1f} s ({len(train_x) / seconds:.0f} images/s); "
      f"loss {np.mean(losses[:5]):.4f} (first 5 steps) -> {np.mean(losses[-5:]):.4f} (last 5)")'''),
    ("code", '''\
every = max(1, len(losses) // 40)                 # one point per `every` steps, as metrics.jsonl logs it
rows = [{"step": s + every, "loss": float(np.mean(losses[s:s + every]))} for s in range(0, len(losses), every)]
show(figures.loss_figure(rows, FIGURES / "loss.png", "BasicUNet, x0 prediction", source="the loop above"))'''),
    ("md", """\
## 4. One-shot denoising fails at high noise

The seed's second figure: corrupt a batch with the amount rising left to right and denoise it in **one** call.
At small amounts the prediction is close; towards amount 1 there is almost nothing left to recover and the
prediction becomes a blurry average digit. The MSE per amount says the same in numbers.""",
     """\
## 4. 한 번에 복원하면 노이즈가 클 때 실패한다

튜토리얼의 두 번째 그림: amount를 왼쪽에서 오른쪽으로 늘려 노이즈를 섞고 **한 번의** 호출로 복원한다.
amount가 작을 때는 예측이 정확하지만, 1에 가까워지면 복원할 정보가 거의 없어 흐릿한 평균적인 숫자가
된다. amount별 MSE도 숫자로 같은 것을 보여 준다."""),
    ("code", '''\
from mnist_diffusion.recipes import get_recipe

net.eval()
pipe = md.Pipeline(get_recipe("seed"), net, name="BasicUNet (trained above)")  # the same net, ready to sample
test_images, test_labels = load_split("mnist", "test")
show(figures.one_shot_figure(pipe, to_float(test_images[:8], "unit"), FIGURES / "one_shot.png"))

clean = to_float(test_images[: size(1000, 32)], "unit")
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    for amount in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        noisy = corrupt(clean, torch.full((len(clean),), amount), generator=g)
        mse = torch.nn.functional.mse_loss(net(noisy), clean).item()
        print(f"amount {amount:.1f}: one-shot MSE {mse:.4f}")'''),
    ("md", """\
## 5. Sampling: many small steps

So the seed removes noise **gradually**: start from pure uniform noise, predict the clean image, move x only
a fraction `mix_factor = 1 / (n_steps - step)` of the way towards it, and repeat. The fraction grows to 1 at
the last step, so the result is the last prediction. Here is the seed's loop as written:""",
     """\
## 5. 샘플링: 여러 번의 작은 단계

그래서 튜토리얼은 노이즈를 **점진적으로** 제거한다. 완전한 균등 노이즈에서 시작해 깨끗한 이미지를
예측하고, x를 그쪽으로 `mix_factor = 1 / (n_steps - step)` 만큼만 옮기는 것을 반복한다. 이 비율은
마지막 단계에서 1이 되므로 결과는 마지막 예측이다. 튜토리얼의 루프 그대로:"""),
    ("code", '''\
n_steps = 5
x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))  # x starts as pure noise
step_history = [x.detach().cpu()]
pred_output_history = []

for step in range(n_steps):
    with torch.no_grad():
        pred = net(x)                           # denoise the current x
    mix_factor = 1 / (n_steps - step)           # how far to move towards the prediction
    x = x * (1 - mix_factor) + pred * mix_factor
    pred_output_history.append(pred.detach().cpu())
    step_history.append(x.detach().cpu())

from mnist_diffusion.diffusion.tutorial import sample_tutorial

same = sample_tutorial(net, step_history[0], n_steps)
print("the package's sample_tutorial gives the same images:", torch.allclose(same, x, atol=1e-6))'''),
    ("md", """\
The seed's third figure, labelled: per step (rows, with the nominal noise amount left in x), the model input
x and the model's prediction. `pipe.sample(8, steps=5)` runs the same sampler (each image from its own
seeded noise), so the CLI draws the same digits:
`mnist-diffusion figures RUN_DIR` after `mnist-diffusion train --recipe seed`.""",
     """\
튜토리얼의 세 번째 그림에 라벨을 붙였다. 단계마다(행, x에 남은 명목상의 노이즈 비율과 함께) 모델 입력 x와
모델의 예측을 보여 준다. `pipe.sample(8, steps=5)` 가 같은 샘플러를 실행하므로(이미지마다 자기 시드의
노이즈에서 시작) CLI도 같은 숫자를 그린다:
`mnist-diffusion train --recipe seed` 다음에 `mnist-diffusion figures RUN_DIR`."""),
    ("code", '''show(figures.steps_figure(pipe, FIGURES / "sampling_steps.png", n=8, steps=5))'''),
    ("md", """\
More steps help only up to a point: the network was never told the noise level, and uniform noise is not
what later models use. Below, the same starting noise with 1, 2, 5 and 20 steps (1 step is one-shot
denoising).""",
     """\
단계를 늘려도 어느 정도까지만 좋아진다. 신경망은 노이즈 비율을 입력으로 받은 적이 없고, 균등 노이즈는
이후 모델들이 쓰는 노이즈도 아니다. 아래는 같은 시작 노이즈에서 1, 2, 5, 20 단계로 샘플링한 결과다
(1 단계는 한 번에 복원하는 것과 같다)."""),
    ("code", '''\
import matplotlib.pyplot as plt

step_counts = size((1, 2, 5, 20), (1, 2, 5))
rows = np.stack([pipe.sample(8, steps=k, seed=0).images for k in step_counts])
fig, ax = plt.subplots(figsize=(6.5, 3.4))
figures.show_grid(ax, rows, [f"{k} steps" for k in step_counts], [f"#{i}" for i in range(8)],
                  "The tutorial's sampler with more steps", ylabel="sampler steps")
show(figures.save_figure(fig, FIGURES / "more_steps.png", "model BasicUNet (trained above), sampler tutorial, seed 0"))'''),
    ("md", """\
## Where next

* `md.train("seed")` (or `mnist-diffusion train --recipe seed`) trains exactly this recipe for the seed's 3
  epochs and writes a run directory; `mnist-diffusion figures RUN_DIR` draws these figures from it.
* The seed promised two things for later parts: predicting the **noise** instead of the image, and working
  in a **latent** space. Notebook 2 (DDPM) and notebook 4 (latent diffusion) do both.""",
     """\
## 다음으로

* `md.train("seed")` (또는 `mnist-diffusion train --recipe seed`) 는 이 레시피를 튜토리얼대로 3 epoch
  학습하고 run 디렉터리를 만든다. `mnist-diffusion figures RUN_DIR` 가 거기서 이 그림들을 그린다.
* 튜토리얼은 다음 편에서 두 가지를 약속했다. 이미지 대신 **노이즈**를 예측하는 것, 그리고 **잠재 공간**에서
  확산하는 것. 2번 노트북(DDPM)과 4번 노트북(잠재 확산)이 그 둘을 다룬다."""),
]


DDPM = [
    ("md", """\
# 2. DDPM: a noise schedule, noise prediction and fast samplers

The seed blended digits with uniform noise and let the network guess how much there was. DDPM (Ho et al.
2020) makes the noise **Gaussian**, fixes how much of it there is at each of T = 1000 timesteps (the
*schedule*), tells the network t, and trains it to predict the noise. This notebook uses the packaged
class-conditional model `ddpm-cond` (its recipe trained for 51 epochs, two minutes on one GPU) to look inside."""),
    ("code", SETUP.format(folder="02")),
    ("code", '''\
from mnist_diffusion.data import load_split, to_float
from mnist_diffusion.diffusion.schedule import make_schedule

pipe = md.load("ddpm-cond")
print(pipe)
schedule = make_schedule(pipe.config.diffusion.schedule, pipe.config.diffusion.timesteps)
print(schedule)
test_images, test_labels = load_split("mnist", "test")
first = [int(np.flatnonzero(test_labels == d)[0]) for d in range(10)]  # one test image of each digit'''),
    ("md", """\
## The forward process q(x_t | x_0)

With alpha_bar_t the schedule's cumulative product, a noisy digit at timestep t is

x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps,  eps ~ N(0, I)

in one step, from the clean digit (images scaled to [-1, 1]). Below, each row keeps one noise draw eps and
the columns raise t; under each t is sqrt(alpha_bar_t), the share of the digit that is left."""),
    ("code", '''\
show(figures.forward_process_figure(schedule, test_images[first[:5]], FIGURES / "forward_process.png",
                                    labels=list(range(5)), name=pipe.config.diffusion.schedule))
print("    t  sqrt(alpha_bar)  sqrt(1-alpha_bar)        SNR   sigma = sqrt((1-ab)/ab)")
for t in (0, 50, 100, 200, 300, 500, 700, 999):
    ab = float(schedule.alpha_bar(t))
    print(f"{t:5d}  {ab ** 0.5:15.4f}  {(1 - ab) ** 0.5:17.4f}  {ab / (1 - ab):9.3g}  {float(schedule.sigma(t)):9.3g}")'''),
    ("md", """\
## The schedule's signal-to-noise ratio

SNR(t) = alpha_bar_t / (1 - alpha_bar_t). The linear schedule (this model's) spends many of its 1000 steps
at very low SNR, where the digit is gone; the cosine schedule falls more evenly."""),
    ("code", '''show(figures.snr_figure(pipe, FIGURES / "snr.png"))'''),
    ("md", """\
## Noise prediction: what the network sees and predicts

The loss (`mnist_diffusion.diffusion.ddpm_loss.diffusion_loss`, Ho 2020 algorithm 1): draw t and eps, make
x_t, and regress the network's output onto eps. From a noise estimate the clean digit follows:
x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_bar_t). `pipe.denoiser(labels)` is the network as
D(x_t, t) -> (x0_hat, eps_hat). For one digit at several t: what the net sees (x_t), the true noise, the
predicted noise and the x0 estimate (noise drawn as grey = 0)."""),
    ("code", '''\
import matplotlib.pyplot as plt
from mnist_diffusion.data import to_uint8

ts = (50, 200, 400, 600, 800, 950)
x0 = to_float(test_images[first[3:4]], "signed")                  # a 3
eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
denoise = pipe.denoiser(labels=torch.tensor([3]))
panels = {"x_t (input)": [], "true noise": [], "predicted noise": [], "x0 estimate": []}
with torch.no_grad():
    for t in ts:
        x_t = schedule.q_sample(x0, t, eps)
        x0_hat, eps_hat = denoise(x_t, t)
        panels["x_t (input)"].append(to_uint8(x_t.clamp(-1, 1), "signed")[0])
        panels["true noise"].append(to_uint8((eps / 3).clamp(-1, 1), "signed")[0])
        panels["predicted noise"].append(to_uint8((eps_hat / 3).clamp(-1, 1), "signed")[0])
        panels["x0 estimate"].append(to_uint8(x0_hat.clamp(-1, 1), "signed")[0])
fig, ax = plt.subplots(figsize=(6.2, 4.6))
figures.show_grid(ax, np.stack([np.stack(v) for v in panels.values()]), list(panels), [f"t={t}" for t in ts],
                  "What the network sees and predicts", xlabel="timestep t")
show(figures.save_figure(fig, FIGURES / "sees_and_predicts.png",
                         "model ddpm-cond, label 3, no guidance; noise shown as eps/3 (grey = 0)"))'''),
    ("md", """\
The same in numbers, on many test digits: the error of the noise estimate and of the x0 estimate per t.
At small t the noise is tiny and hard to see, but x0 is nearly given; at large t the noise is nearly all of
x_t (easy to predict), but x0 can only be guessed."""),
    ("code", '''\
n = size(500, 16)
x0 = to_float(test_images[:n], "signed")
eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
denoise = pipe.denoiser(labels=torch.from_numpy(test_labels[:n]))
print("    t   MSE(eps_hat, eps)   MSE(x0_hat, x0)")
with torch.no_grad():
    for t in (10, 100, 300, 500, 700, 900, 999):
        x0_hat, eps_hat = denoise(schedule.q_sample(x0, t, eps), t)
        print(f"{t:5d}   {torch.mean((eps_hat - eps) ** 2).item():17.4f}   {torch.mean((x0_hat - x0) ** 2).item():15.4f}")'''),
    ("md", """\
## Three samplers on the same noise

Sampling walks a descending grid of timesteps from pure noise. **Ancestral** DDPM (Ho 2020 alg. 2) takes all
1000 steps, adding fresh noise at each; **DDIM** (Song 2021) is deterministic and can skip steps;
**DPM-Solver++(2M)** (Lu 2022) is a second-order solver that needs even fewer. Each row starts from the same
noise (seed 0, one image per digit, guidance 2); images/s are measured here, on this machine, for 10 images."""),
    ("code", '''\
runs = [("ddpm", size(1000, 4)), ("ddim", size(50, 3)), ("dpmpp_2m", size(20, 3)), ("dpmpp_2m", size(8, 2))]
rows, names = [], []
print("sampler    steps  network calls/image  seconds  images/s  label accuracy")
for sampler, steps in runs:
    out = pipe.sample(10, labels="0-9", sampler=sampler, steps=steps, guidance=2.0, seed=0)
    acc = md.evaluate(out.images, labels=out.labels, metrics=["label_accuracy"], baselines=False)
    seconds = out.settings["seconds"]
    print(f"{sampler:9s} {steps:6d} {2 * steps:20d} {seconds:8.2f} {10 / seconds:9.2f} "
          f"{acc['samples']['label_accuracy']:15.0%}")
    rows.append(out.images)
    names.append(f"{sampler}, {steps} steps")
fig, ax = plt.subplots(figsize=(7.6, 3.6))
figures.show_grid(ax, np.stack(rows), names, [str(d) for d in range(10)], "Samplers on the same noise",
                  xlabel="digit asked for")
show(figures.save_figure(fig, FIGURES / "samplers.png", "model ddpm-cond, guidance 2, seed 0; guided: 2 network "
                         "calls per step"))'''),
    ("md", """\
Watching one sampler: x_t and the x0 estimate at every step of DPM-Solver++ (10 steps). The estimate is a
recognisable digit long before x_t is. `mnist-diffusion sample --labels 0-9 --n 10 --gif out.gif` writes the
same as an animation."""),
    ("code", '''\
trajectory = figures.Trajectory(pipe.value_range, keep=10)
out = pipe.sample(10, labels="0-9", steps=size(10, 2), callback=trajectory)
show(figures.trajectory_figure(trajectory, out, FIGURES / "steps.png", pipe))
print("wrote", figures.write_trajectory_gif(trajectory, out, FIGURES / "denoising.gif"))'''),
]


GUIDANCE = [
    ("md", """\
# 3. Class guidance: asking for a digit, and how hard to ask

`ddpm-cond` takes a class label with x_t and t. **Classifier-free guidance** (Ho & Salimans 2022) trains one
network both with and without labels (label dropout), then at sampling time mixes the two predictions:
eps = eps_u + w (eps_c - eps_u). w = 0 is unconditional, w = 1 plain conditional, w > 1 pushes further
towards the label. This notebook measures what w buys and costs with the project's evaluator."""),
    ("code", SETUP.format(folder="03")),
    ("code", '''\
from mnist_diffusion.diffusion.ddpm_loss import drop_labels

pipe = md.load("ddpm-cond")
print(pipe)
p = pipe.config.train.label_dropout
print(f"label dropout during training: p = {p}")
labels = torch.arange(10).repeat(2)
print("labels         ", labels.tolist())
print("after dropout  ", drop_labels(labels, 10, p, torch.Generator().manual_seed(3)).tolist(),
      " (10 = 'no label')")
many = drop_labels(torch.zeros(100_000, dtype=torch.long), 10, p, torch.Generator().manual_seed(0))
print(f"share dropped in 100,000 labels: {(many == 10).float().mean().item():.4f}")'''),
    ("md", """\
## The guidance sweep

Rows are the digits asked for, columns the guidance scale; every row starts from the same noise, so a row
shows one sample changing with w. At w = 0 the label is ignored (the network's unconditional prediction):
the row's digit is whatever the noise suggests."""),
    ("code", '''\
scales = size((0.0, 1.0, 2.0, 3.0, 5.0, 8.0), (0.0, 1.0, 3.0))
show(figures.guidance_figure(pipe, FIGURES / "guidance_sweep.png", scales=scales, steps=size(20, 2)))'''),
    ("md", """\
## Label accuracy and diversity against w

For each w, N samples (N/10 of each digit, the same seeds for every w) scored with the packaged MNIST
evaluator: **label accuracy** (does the evaluator read the digit that was asked for?), **recall** (how much of
the real test set's variety the samples cover, in the evaluator's features) and the **spread within a digit**
(mean distance of a digit's samples to their centre in the evaluator's features, relative to the same for
real test digits: 1 = as varied as real digits)."""),
    ("code", '''\
from mnist_diffusion.data import load_split
from mnist_diffusion.evaluation.evaluator_file import load_evaluator
from mnist_diffusion.evaluation.features import extract

evaluator = load_evaluator("mnist")
test_images, test_labels = load_split("mnist", "test")


def spread(images, labels):
    """Mean distance to the digit's centre in evaluator features, averaged over digits."""
    features, _ = extract(evaluator, images)
    features = np.asarray(features, dtype=np.float64)
    return np.mean([np.linalg.norm(features[labels == d] - features[labels == d].mean(0), axis=1).mean()
                    for d in np.unique(labels)])


n = size(300, 20)
real = spread(test_images[:n], test_labels[:n])
table = []
print(f"N = {n} per scale, sampler {pipe.config.sample.sampler}, {size(10, 2)} steps")
print("    w   label accuracy   recall   precision   spread (real = 1)   seconds")
for w in scales:
    out = pipe.sample(n, labels="0-9", guidance=w, steps=size(10, 2), seed=1000)
    report = md.evaluate(out.images, labels=out.labels, metrics=["label_accuracy", "precision_recall"],
                         baselines=False)
    s = report["samples"]
    table.append((w, s["label_accuracy"], s["recall"], s["precision"], spread(out.images, out.labels) / real))
    print(f"{w:5.1f}   {s['label_accuracy']:14.1%}   {s['recall']:6.3f}   {s['precision']:9.3f}   "
          f"{table[-1][4]:17.3f}   {out.settings['seconds']:7.1f}")'''),
    ("code", '''\
import matplotlib.pyplot as plt

w, accuracy, recall, precision, relative = (np.array(c) for c in zip(*table))
fig, ax = plt.subplots(figsize=(5.8, 3.8))
ax.plot(w, accuracy * 100, "o-", label="label accuracy (%)")
ax.set(xlabel="guidance scale w", ylabel="label accuracy (%)", title="What guidance buys and costs")
ax.grid(alpha=0.3)
twin = ax.twinx()
twin.plot(w, recall, "s--", color="tab:orange", label="recall")
twin.plot(w, relative, "^--", color="tab:green", label="spread within a digit (real = 1)")
twin.set_ylabel("recall, relative spread")
fig.legend(loc="lower right", fontsize=8, bbox_to_anchor=(0.88, 0.2))
show(figures.save_figure(fig, FIGURES / "guidance_tradeoff.png",
                         f"model ddpm-cond, {n} samples per scale, {size(10, 2)} steps; evaluator-mnist features"))'''),
    ("md", """\
Low w gives varied digits, some of the wrong class; high w gives the right class almost always, but the
samples of a digit grow alike (lower spread and recall) and, at large w, over-saturated. The packaged model
samples at w = 1.35 by default: the lowest scale whose digits the evaluator read back at least 99.5% of the
time (its model card). `mnist-diffusion evaluate ddpm-cond --n 10000 --guidance W` measures the same at full
size, with FID beside its baselines (notebook 5)."""),
]


LATENT = [
    ("md", """\
# 4. Latent diffusion: diffuse in a small code, decode at the end

Latent diffusion (Rombach et al. 2022, the idea behind Stable Diffusion) first trains an **autoencoder**
that squeezes an image into a small latent and back, then runs diffusion on the latents. The packaged `ldm`
works in the `ldm-ae` autoencoder's 4 x 7 x 7 latents: 196 numbers instead of 784 pixels, and a network that
runs on 7 x 7 maps."""),
    ("code", SETUP.format(folder="04")),
    ("code", '''\
from mnist_diffusion.data import load_split, to_float

ldm = md.load("ldm")
ae = ldm.autoencoder
print(ldm)
test_images, test_labels = load_split("mnist", "test")
x = to_float(test_images[:16], "signed")
z = ae.encode(x)
print(f"images {tuple(x.shape)} -> latents {tuple(z.shape)}: {x[0].numel()} numbers -> {z[0].numel()} "
      f"({x[0].numel() / z[0].numel():.0f}x fewer); latent scale {ldm.config.latent.scale:.4f}")'''),
    ("md", """\
## The autoencoder: reconstructions and latents

Top: test digits; bottom: decoded from their latents (the posterior mean). The PSNR is over the ten shown;
below it, over many test digits."""),
    ("code", '''\
first = [int(np.flatnonzero(test_labels == d)[0]) for d in range(10)]
show(figures.reconstruction_figure(ae, test_images[first], FIGURES / "reconstructions.png", list(range(10)), "ldm-ae"))

from mnist_diffusion.latent import reconstruct, reconstruction_psnr

many = test_images[: size(2000, 32)]
print(f"PSNR over {len(many)} test digits: {reconstruction_psnr(many, reconstruct(ae, many)):.2f} dB")'''),
    ("md", """\
Each digit's latent as four 7 x 7 maps (scaled as the diffusion model sees them). They are not little
pictures of the digit: the decoder gives them meaning."""),
    ("code", '''\
show(figures.latent_channels_figure(ae, test_images[first[:6]], ldm.config.latent.scale, FIGURES / "latent_channels.png",
                                    list(range(6)), "ldm-ae"))'''),
    ("md", """\
Blending two latents and decoding gives digits along the way; blending pixels only cross-fades."""),
    ("code", '''\
show(figures.interpolation_figure(ae, test_images[first[1]], test_images[first[8]], FIGURES / "interpolation.png",
                                  name="ldm-ae"))'''),
    ("md", """\
## Sampling in latent space

The same samplers and guidance as in pixels, on (4, 7, 7) latents; the callback still gets decoded x_t and
x0 (and the latents themselves as `z_t`, `z0`)."""),
    ("code", '''\
shapes, trajectory = [], figures.Trajectory(ldm.value_range, keep=10)


def watch(step):
    shapes.append((tuple(step["z_t"].shape[1:]), tuple(step["x_t"].shape[1:])))
    trajectory(step)


out = ldm.sample(10, labels="0-9", steps=size(10, 2), callback=watch)
print("the sampler works on", shapes[0][0], "latents; the callback also sees x_t decoded to", shapes[0][1])
show(figures.trajectory_figure(trajectory, out, FIGURES / "latent_steps.png", ldm))'''),
    ("md", """\
## Why it is faster, measured

The same sampler, steps and guidance for the pixel model and the latent model, timed here (the second of two
runs, so one-off start-up costs are not counted); the latent model's time includes decoding."""),
    ("code", '''\
pixel = md.load("ddpm-cond")
n, steps = size(64, 10), size(20, 3)
rates = {}
for name, model in (("ddpm-cond (pixels)", pixel), ("ldm (latents)", ldm)):
    for _ in range(2):
        out = model.sample(n, labels="0-9", steps=steps, seed=0)
    acc = md.evaluate(out.images, labels=out.labels, metrics=["label_accuracy"], baselines=False)
    rates[name] = n / out.settings["seconds"]
    params = sum(p.numel() for p in model.net.parameters())
    print(f"{name:20s} {params:>10,} parameters, works on {model.sample_shape}: {rates[name]:7.1f} images/s, "
          f"label accuracy {acc['samples']['label_accuracy']:.0%}")
ratio = rates["ldm (latents)"] / rates["ddpm-cond (pixels)"]
print(f"latent / pixel speed: {ratio:.1f}x ({n} images, {steps} DPM-Solver++ steps, guidance 2, "
      f"{torch.get_num_threads()} threads)")'''),
]


JUDGING = [
    ("md", """\
# 5. Judging samples: FID, KID, precision, recall, label accuracy

Looking at grids tells a lot, but comparing models needs numbers. The project scores samples in the
features of a small MNIST classifier that ships with it (`evaluator-mnist`, 99.47% test accuracy), against
the 10,000 test digits, and always beside two **baselines at the same N**: real training digits (about the
best a generator can do) and uniform noise (the worst)."""),
    ("code", SETUP.format(folder="05")),
    ("code", '''\
from mnist_diffusion.evaluation import format_report

pipe = md.load("ddpm-cond")
n = size(1000, 50)
report = md.evaluate(pipe, n=n, steps=size(5, 3), metrics=["fid", "kid", "precision_recall", "classes",
                                                             "label_accuracy"])
print(format_report(report))'''),
    ("md", """\
What each row means:

* **FID** (Fréchet distance): fit a Gaussian to the samples' features and one to the test set's; the distance
  between them. 0 is identical statistics. Biased upwards at small N.
* **KID** (kernel distance): an unbiased estimate of a kernel two-sample distance, averaged over random
  subsets; it can be slightly negative for a perfect generator. Comparable across N in expectation.
* **precision / recall** (k-NN manifolds, Kynkäänniemi 2019): the share of samples that look like real
  digits, and the share of real digits the samples cover.
* **class entropy**: how evenly the evaluator's predicted classes spread (3.32 bits = all ten equally).
* **label accuracy**: the share of samples the evaluator reads as the digit that was asked for.

The numbers from the report, pulled out:"""),
    ("code", '''\
s, train, noise = report["samples"], report["baselines"]["train"], report["baselines"]["noise"]
print(f"FID@{n}: samples {s['fid']:.3f}, real training digits {train['fid']:.3f}, noise {noise['fid']:.1f}; "
      f"samples / real = {s['fid'] / train['fid']:.1f}x")
print(f"label accuracy: samples {s['label_accuracy']:.1%}, real {train['label_accuracy']:.1%}, "
      f"noise {noise['label_accuracy']:.1%}")'''),
    ("md", """\
## Why N matters

Real training digits are as good as samples get, yet their FID against the test set is far from 0 at small
N: FID's bias shrinks roughly like 1/N. KID has no such bias, only noise. So a FID means something only beside
a baseline at the **same N**, which every report prints. Below, random real training digits at several N."""),
    ("code", '''\
import matplotlib.pyplot as plt
from mnist_diffusion.data import load_split

train_images, train_labels = load_split("mnist", "train")
rng = np.random.default_rng(0)
sizes = size([100, 300, 1000, 3000, 10000], [20, 60])
rows = []
print("     N    FID (real digits)   KID x 1000 (mean ± std)")
for count in sizes:
    pick = rng.choice(len(train_images), count, replace=False)
    r = md.evaluate(train_images[pick], metrics=["fid", "kid"], baselines=False, kid_subsets=size(50, 10))["samples"]
    rows.append((count, r["fid"], r["kid_mean"] * 1000, r["kid_std"] * 1000))
    print(f"{count:6d}   {r['fid']:17.3f}   {r['kid_mean'] * 1000:8.3f} ± {r['kid_std'] * 1000:.3f}")
N, fid, kid, kid_std = (np.array(c) for c in zip(*rows))
fig, axs = plt.subplots(1, 2, figsize=(9, 3.6))
axs[0].plot(N, fid, "o-")
axs[0].set(xscale="log", yscale="log", xlabel="N (samples)", ylabel="FID", title="FID of real digits vs N")
axs[1].errorbar(N, kid, yerr=kid_std, fmt="o-", capsize=3)
axs[1].axhline(0, color="0.5", lw=0.8)
axs[1].set(xscale="log", xlabel="N (samples)", ylabel="KID x 1000", title="KID of real digits vs N")
for ax in axs:
    ax.grid(alpha=0.3)
show(figures.save_figure(fig, FIGURES / "why_n_matters.png", "random MNIST training digits against the test set; "
                         "evaluator-mnist features"))'''),
    ("md", """\
## What the metrics catch, and what they miss

Two broken "generators" to see which number moves: one that returns **the training images themselves**
(perfect scores on everything above, so the report also counts near-copies of training digits) and one whose
digits are fine but carry the **wrong labels** (only label accuracy notices)."""),
    ("code", '''\
k = size(500, 20)
copies = train_images[:k]
wrong = (train_labels[:k] + 1) % 10
for name, images, labels in (("copies of training digits", copies, train_labels[:k]),
                             ("right digits, wrong labels", copies, wrong)):
    r = md.evaluate(images, labels=labels, metrics=["fid", "label_accuracy", "memorisation"], baselines=False)
    s = r["samples"]
    print(f"{name:28s} FID@{k} {s['fid']:.3f}   label accuracy {s['label_accuracy']:.1%}   "
          f"near-copies {s['memorisation']['copy_fraction']:.1%}")
out = pipe.sample(k, steps=size(5, 3), seed=5)
s = md.evaluate(out.images, labels=out.labels, metrics=["memorisation"], baselines=False)["samples"]
print(f"{'ddpm-cond samples':28s} near-copies {s['memorisation']['copy_fraction']:.1%}")'''),
    ("md", """\
`mnist-diffusion evaluate MODEL --n 10000` prints the full report; `benchmarks/results/` holds the project's
measured ones (README, "Measured")."""),
]

NOTEBOOKS = {
    "01_seed_retold.ipynb": ("The seed, retold", SEED, 0),
    "01_seed_retold_ko.ipynb": ("시드 튜토리얼 다시 보기", SEED, 1),
    "02_ddpm.ipynb": ("DDPM", DDPM, 0),
    "03_class_guidance.ipynb": ("Class guidance", GUIDANCE, 0),
    "04_latent_diffusion.ipynb": ("Latent diffusion", LATENT, 0),
    "05_judging_samples.ipynb": ("Judging samples", JUDGING, 0),
}


def notebook(cells, language: int):
    """An nbformat notebook from (kind, text[, translation]) cells; markdown in `language` (0 English, 1 Korean)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    for kind, *texts in cells:
        text = texts[min(language, len(texts) - 1)]
        nb.cells.append(nbformat.v4.new_markdown_cell(text) if kind == "md" else nbformat.v4.new_code_cell(text))
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
    return nb


def write() -> list[Path]:
    paths = []
    for name, (_, cells, language) in NOTEBOOKS.items():
        path = HERE / name
        nbformat.write(notebook(cells, language), str(path))
        paths.append(path)
    return paths


def run(names=None, tiny: bool = False, figures: Path | None = None, timeout: int = 900,
        outputs: Path | None = None) -> None:
    """Execute the notebooks in place of a copy (the files in git keep no outputs); `outputs`: a folder to write
    the executed copies to (what the tutorial pages quote)."""
    from nbclient import NotebookClient

    if tiny:
        os.environ["MNIST_DIFFUSION_NOTEBOOK_SIZE"] = "tiny"
    if figures is not None:
        os.environ["MNIST_DIFFUSION_NOTEBOOK_FIGURES"] = str(Path(figures).resolve())
    for name in names or NOTEBOOKS:
        nb = nbformat.read(str(HERE / name), as_version=4)
        started = time.perf_counter()
        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
        print(f"{name}: ran in {time.perf_counter() - started:.0f} s", flush=True)
        if outputs is not None:
            Path(outputs).mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, str(Path(outputs) / name))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("write")
    r = sub.add_parser("run")
    r.add_argument("names", nargs="*")
    r.add_argument("--tiny", action="store_true")
    r.add_argument("--figures", type=Path)
    r.add_argument("--outputs", type=Path, help="also write the executed notebooks here")
    args = p.parse_args(argv)
    if args.command == "write":
        for path in write():
            print(path)
    else:
        run(args.names, args.tiny, args.figures, outputs=args.outputs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
