"""The paper's five main settings (Tabs. 1-3): teacher name -> short column title."""

MAIN_MODELS = {
    "resnet20_cifar10": "CIFAR-10 RN-20",
    "resnet20_cifar100": "CIFAR-100 RN-20",
    "resnet18": "ImageNet RN-18",
    "resnet50": "ImageNet RN-50",
    "mobilenetv2_w1": "ImageNet MB-V2",
}
