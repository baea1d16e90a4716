"""tools/web_demo.py: the handlers' messages on bad input (fast, with a
stand-in inferencer) and a real-browser round trip (headless Chromium via
Selenium against the real RefSegInferencer)."""
import io
import json
import os.path as osp
import shutil
import socket
import urllib.request
from urllib.parse import urlsplit

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from ..conftest import load_tool, tiny_cfg

gr = pytest.importorskip(
    'gradio', reason='gradio is not installed (pip install -e .[tests])')

SENTENCES = ('the red circle', 'the star on the left')


@pytest.fixture(scope='module')
def web_demo():
    return load_tool('web_demo.py')


class FakeInferencer:
    """Stands in for ``RefSegInferencer`` (same call contract): predicts
    the left half of the image for every sentence; the overlay is the
    image (RGB) with that half painted red."""

    def __init__(self, error: Exception = None) -> None:
        self.calls = []
        self.error = error

    def __call__(self, images, texts, return_vis=False):
        self.calls.append((images, list(texts), return_vis))
        if self.error is not None:
            raise self.error
        rgb = cv2.imread(images)[..., ::-1]
        h, w = rgb.shape[:2]
        mask = np.zeros((h, w), np.uint8)
        mask[:, :w // 2] = 1
        vis = rgb.copy()
        vis[:, :w // 2] = (255, 0, 0)
        preds = [dict(mask=mask, prob=mask.astype(np.float32), text=t)
                 for t in texts]
        return dict(predictions=preds, visualization=[vis] * len(texts))


def write_png(path, h: int, w: int) -> str:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(path)
    return str(path)


@pytest.fixture
def image_path(tmp_path):
    return write_png(tmp_path / 'img.png', 30, 40)


def handlers(web_demo, inferencer=None, **limits):
    _, demo = web_demo.build_app(inferencer or FakeInferencer(),
                                 limits=web_demo.DemoLimits(**limits))
    return demo


@pytest.mark.parametrize('text', ['', '   ', '\n \n\t\n', None])
def test_empty_sentence_is_a_message(web_demo, image_path, text):
    fake = FakeInferencer()
    overlays, masks, message = handlers(web_demo, fake).segment(
        image_path, text)
    assert overlays == [] and masks == []
    assert 'Type a sentence' in message
    assert fake.calls == []


def test_no_image_is_a_message(web_demo):
    fake = FakeInferencer()
    overlays, masks, message = handlers(web_demo, fake).segment(
        None, 'the red circle')
    assert (overlays, masks) == ([], [])
    assert 'Upload an image' in message
    assert fake.calls == []


def test_image_over_pixel_limit_is_a_message(web_demo, tmp_path):
    path = write_png(tmp_path / 'big.png', 101, 100)  # 10100 px
    fake = FakeInferencer()
    overlays, masks, message = handlers(
        web_demo, fake, max_pixels=10_000).segment(path, 'the red circle')
    assert (overlays, masks) == ([], [])
    assert 'big.png is 100x101 = 10100 pixels' in message
    assert 'limit is 10000 pixels' in message
    assert fake.calls == []
    # At the limit it passes.
    _, _, message = handlers(web_demo, fake, max_pixels=10_100).segment(
        path, 'the red circle')
    assert 'limit' not in message and len(fake.calls) == 1


def test_image_over_byte_limit_is_a_message(web_demo, image_path):
    size = osp.getsize(image_path)
    fake = FakeInferencer()
    overlays, masks, message = handlers(
        web_demo, fake, max_bytes=size - 1).segment(image_path, 'a star')
    assert (overlays, masks) == ([], [])
    assert 'img.png is' in message and 'the limit is' in message
    assert fake.calls == []


def test_not_an_image_is_a_message(web_demo, tmp_path):
    path = tmp_path / 'notes.png'
    path.write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    fake = FakeInferencer()
    _, _, message = handlers(web_demo, fake).segment(str(path), 'a star')
    assert 'notes.png is not a readable image' in message
    assert 'JPEG' in message and 'PNG' in message
    assert fake.calls == []


def test_gif_is_refused_with_the_formats(web_demo, tmp_path):
    path = tmp_path / 'anim.gif'
    Image.new('RGB', (8, 8)).save(path)
    _, _, message = handlers(web_demo).segment(str(path), 'a star')
    assert 'anim.gif is a GIF file' in message and 'PNG' in message


def test_too_many_sentences_is_a_message(web_demo, image_path):
    fake = FakeInferencer()
    text = '\n'.join(f'shape {k}' for k in range(4))
    _, _, message = handlers(web_demo, fake, max_sentences=3).segment(
        image_path, text)
    assert '4 sentences given; at most 3' in message
    assert fake.calls == []


def test_inferencer_value_error_is_a_message(web_demo, image_path):
    fake = FakeInferencer(ValueError('sentence 0 of image0 is empty'))
    overlays, _, message = handlers(web_demo, fake).segment(
        image_path, 'x')
    assert overlays == []
    assert 'The model refused the input: sentence 0 of image0 is empty' \
        in message


def test_segment_several_sentences(web_demo, image_path):
    fake = FakeInferencer()
    text = f'  {SENTENCES[0]}  \n\n{SENTENCES[1]}\n'
    overlays, masks, message = handlers(web_demo, fake).segment(
        image_path, text)
    # One call: the image path and the stripped, non-blank lines.
    assert fake.calls == [(image_path, list(SENTENCES), True)]
    rgb = np.asarray(Image.open(image_path).convert('RGB'))
    expected_vis = rgb.copy()
    expected_vis[:, :20] = (255, 0, 0)
    expected_mask = np.zeros((30, 40), np.uint8)
    expected_mask[:, :20] = 255
    assert len(overlays) == len(masks) == 2
    for k, sentence in enumerate(SENTENCES):
        np.testing.assert_array_equal(overlays[k][0], expected_vis)
        np.testing.assert_array_equal(masks[k][0], expected_mask)
        # Half of 30 x 40 pixels.
        assert f'"{sentence}": 600 px (50.0% of the image)' in \
            overlays[k][1]
        assert f'"{sentence}": 600 px' in message


def test_inferencer_answering_too_few_is_an_error(web_demo, image_path):

    def short(images, texts, return_vis=False):
        out = FakeInferencer()(images, texts, return_vis)
        return dict(predictions=out['predictions'][:1],
                    visualization=out['visualization'][:1])

    with pytest.raises(RuntimeError, match='1 predictions .* 2 sentences'):
        handlers(web_demo, short).segment(image_path, 'a\nb')


def test_samples_from_refshapes(web_demo, refshapes_root):
    samples = web_demo.load_samples(refshapes_root, 'val', max_images=3)
    assert 1 <= len(samples) <= 3
    from ris_plugins.datasets.refcoco import load_refer_pickle
    refs = load_refer_pickle(
        osp.join(refshapes_root, 'refshapes', 'refs(unc).p'))
    demo = web_demo.RefSegDemo(FakeInferencer(), samples)
    for sample in samples:
        image_id = int(osp.splitext(sample.img_path)[0].rsplit('_', 1)[1])
        expected = [r['sentences'][0]['raw'] for r in refs
                    if r['image_id'] == image_id and r['split'] == 'val']
        assert list(sample.sentences) == expected
        img, text = demo.load_sample(sample.label)
        assert text.splitlines() == expected
        np.testing.assert_array_equal(
            img, np.asarray(Image.open(sample.img_path).convert('RGB')))
    with pytest.raises(KeyError, match='no sample'):
        demo.load_sample('not a sample')


def test_missing_samples_root_names_it(web_demo, tmp_path):
    missing = str(tmp_path / 'nowhere')
    with pytest.raises(FileNotFoundError, match='nowhere.*make_refshapes'):
        web_demo.load_samples(missing)
    with pytest.raises(SystemExit):
        web_demo.parse_args(['c.py', 'w.pth', '--samples-root', missing])


def test_cli_defaults_bind_localhost(web_demo):
    args = web_demo.parse_args(['c.py', 'w.pth'])
    assert (args.host, args.port) == ('127.0.0.1', 7860)
    for bad in (['--max-pixels', '0'], ['--port', '70000'],
                ['--max-mb', '-1']):
        with pytest.raises(SystemExit):
            web_demo.parse_args(['c.py', 'w.pth'] + bad)


def test_app_is_offline_and_lossless(web_demo):
    app, _ = web_demo.build_app(FakeInferencer())
    assert app.analytics_enabled is False
    by_id = {b.elem_id: b for b in app.blocks.values()
             if getattr(b, 'elem_id', None)}
    assert set(web_demo.ELEM_IDS.values()) <= set(by_id)
    image = by_id['input_image']
    assert (image.type, image.image_mode) == ('filepath', None)
    for key in ('input_image', 'overlays', 'masks'):
        assert by_id[key].format == 'png', key


# ---------------------------------------------------------------- browser
BROWSERS = ('chromium', 'chromium-browser', 'google-chrome')
LOOPBACK = ('127.0.0.1', 'localhost', '::1')


def browser_paths():
    """(browser, chromedriver) paths, or skip with the reason."""
    pytest.importorskip(
        'selenium', reason='selenium is not installed (pip install -e '
        '.[tests])')
    browser = next(filter(None, map(shutil.which, BROWSERS)), None)
    driver = shutil.which('chromedriver')
    if not (browser and driver):
        pytest.skip(
            'no headless browser: needs Debian chromium and chromium-driver '
            f'(found browser={browser}, chromedriver={driver}); '
            'tools/setup_env.sh installs them when run as root')
    return browser, driver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def make_driver(browser: str, driver: str, profile: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ('--headless', '--no-sandbox', '--disable-gpu',
                 '--disable-dev-shm-usage', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync',
                 '--no-first-run', '--window-size=1280,1600',
                 f'--user-data-dir={profile}',
                 # Nothing but loopback resolves: the page must work offline.
                 '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1'):
        options.add_argument(flag)
    options.set_capability('goog:loggingPrefs', {'performance': 'ALL'})
    # An explicit driver path: Selenium Manager (which downloads) not run.
    return webdriver.Chrome(options=options, service=Service(driver))


def requested_hosts(driver) -> set:
    """Hosts of every network request the page made (Chrome's
    performance log)."""
    hosts = set()
    for entry in driver.get_log('performance'):
        msg = json.loads(entry['message'])['message']
        if msg['method'] == 'Network.requestWillBeSent':
            url = msg['params']['request']['url']
            if url.split(':', 1)[0] in ('http', 'https', 'ws', 'wss'):
                hosts.add(urlsplit(url).hostname)
    return hosts


@pytest.fixture
def connections(monkeypatch):
    """Every host this process looks up or connects to while the test
    runs (the in-process Gradio server included)."""
    seen = []
    getaddrinfo, connect = socket.getaddrinfo, socket.socket.connect

    def spy_getaddrinfo(host, *args, **kwargs):
        seen.append(host)
        return getaddrinfo(host, *args, **kwargs)

    def spy_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            seen.append(address[0])
        return connect(sock, address)

    monkeypatch.setattr(socket, 'getaddrinfo', spy_getaddrinfo)
    monkeypatch.setattr(socket.socket, 'connect', spy_connect)
    return seen


def object_everywhere_model(refshapes_root, tmp_path):
    """(config path, checkpoint path) of a tiny baseline whose head
    predicts 'object' at every pixel: FPNHead's 2-class ``conv_seg`` has
    zero weights and bias (-8, 8), so the argmax is 1 whatever the
    features."""
    from mmseg.registry import MODELS
    cfg = tiny_cfg(refshapes_root, str(tmp_path / 'work'))
    cfg_path = str(tmp_path / 'tiny.py')
    cfg.dump(cfg_path)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    conv_seg = model.decode_head.conv_seg
    torch.nn.init.zeros_(conv_seg.weight)
    conv_seg.bias.data = torch.tensor([-8.0, 8.0])
    ckpt = str(tmp_path / 'tiny.pth')
    torch.save({'state_dict': model.state_dict()}, ckpt)
    return cfg_path, ckpt


def referred_sample(refshapes_root):
    """(image path, sentence, GT mask (H, W) bool) of the first val ref."""
    from ris_plugins.datasets.refcoco import RefCOCODataset
    from ris_plugins.datasets.transforms.loading import (LoadRefImage,
                                                         LoadRefMask)
    ds = RefCOCODataset(
        data_root=refshapes_root, dataset='refshapes', split='val',
        sentence_mode='first', pipeline=[LoadRefImage(), LoadRefMask()],
        test_mode=True)
    info = ds[0]
    return (info['img_path'], info['text'],
            info['gt_seg_map'].astype(bool))


def fetch_png(url: str) -> np.ndarray:
    with urllib.request.urlopen(url, timeout=60) as resp:
        data = resp.read()
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == 'PNG', im.format  # lossless, not WebP
        return np.asarray(im.convert('RGB'))


def submit_in_page(driver, wait, url: str, image: str, sentence: str):
    """Open the page, upload ``image``, type ``sentence``, press
    Segment."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    driver.get(url)
    upload = wait.until(EC.presence_of_element_located(
        (By.CSS_SELECTOR, '#input_image input[type=file]')))
    upload.send_keys(image)
    # The upload is in once the component shows it from the server.
    wait.until(lambda d: any(
        '/gradio_api/file=' in (img.get_attribute('src') or '')
        for img in d.find_elements(By.CSS_SELECTOR, '#input_image img')))
    driver.find_element(By.CSS_SELECTOR,
                        '#sentences textarea').send_keys(sentence)
    driver.find_element(By.CSS_SELECTOR, '#submit').click()


@pytest.mark.slow
def test_browser_round_trip(web_demo, refshapes_root, tmp_path,
                            connections):
    """Upload a RefShapes image and its sentence in headless Chromium; the
    overlay that comes back is the inferencer's own, pixel for pixel, and
    differs from the image over the referred shape. An image over the
    pixel limit gets the refusal in the page; an upload over the byte
    limit is refused by the server."""
    browser, driver_path = browser_paths()
    import httpx
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
    from ris_plugins.apis import RefSegInferencer

    cfg_path, ckpt = object_everywhere_model(refshapes_root, tmp_path)
    inferencer = RefSegInferencer(model=cfg_path, weights=ckpt,
                                  device='cpu')
    img_path, sentence, gt = referred_sample(refshapes_root)
    image = cv2.imread(img_path)[..., ::-1]
    assert image.shape[0] * image.shape[1] <= 100_000
    big = str(tmp_path / 'big.png')
    Image.new('RGB', (400, 300), (90, 120, 150)).save(big)
    limits = web_demo.DemoLimits(max_pixels=100_000, max_bytes=2**20)
    app, _ = web_demo.build_app(inferencer, limits=limits)
    for attempt in range(3):  # another process may take the free port
        port = free_port()
        try:
            web_demo.launch(app, '127.0.0.1', port, limits, block=False)
            break
        except OSError:
            if attempt == 2:
                raise
    url = f'http://127.0.0.1:{port}/'
    driver = make_driver(browser, driver_path, str(tmp_path / 'profile'))
    try:
        # Generous: the machine may be shared with other test processes.
        wait = WebDriverWait(driver, 120, ignored_exceptions=(
            StaleElementReferenceException, ))
        submit_in_page(driver, wait, url, img_path, sentence)
        overlay_img = wait.until(EC.presence_of_element_located(
            (By.CSS_SELECTOR, '#overlays img')))
        mask_img = wait.until(EC.presence_of_element_located(
            (By.CSS_SELECTOR, '#masks img')))
        overlay = fetch_png(overlay_img.get_attribute('src'))
        mask = fetch_png(mask_img.get_attribute('src'))[..., 0]
        status = driver.find_element(By.CSS_SELECTOR, '#status').text
        submit_in_page(driver, wait, url, big, sentence)
        wait.until(EC.text_to_be_present_in_element(
            (By.CSS_SELECTOR, '#status'), 'the limit is'))
        refusal = driver.find_element(By.CSS_SELECTOR, '#status').text
        no_overlay = driver.find_elements(By.CSS_SELECTOR, '#overlays img')
        hosts = requested_hosts(driver)
        too_big = httpx.post(
            url + 'gradio_api/upload', timeout=60,
            files={'files': ('x.png', b'\0' * (2**20 + 1), 'image/png')})
    finally:
        driver.quit()
        app.close()

    expected = inferencer(img_path, [sentence], return_vis=True)
    np.testing.assert_array_equal(overlay, expected['visualization'][0])
    # RefSegLocalVisualizer appends a caption band below the image.
    h = image.shape[0]
    assert overlay.shape[0] >= h and overlay.shape[1:] == image.shape[1:]
    assert mask.shape == gt.shape
    assert (mask == 255).all()  # 'object' everywhere
    diff = np.abs(overlay[:h].astype(int) - image.astype(int)).sum(-1)
    assert (diff[gt] > 0).mean() > 0.95, 'overlay unchanged over the shape'
    assert sentence in status and f'{gt.size} px' in status
    assert 'big.png is 400x300 = 120000 pixels' in refusal
    assert no_overlay == []
    assert too_big.status_code == 413, too_big.text
    assert hosts <= set(LOOPBACK), f'page requested {hosts - {*LOOPBACK}}'
    outbound = set(connections) - set(LOOPBACK)
    assert not outbound, f'the server or test connected to {outbound}'
