"""Names of the paper's settings: the five main ones (columns of Tabs. 2-3) and every teacher's long name."""

# The paper's five main settings (Tabs. 1-3): teacher name -> short column title.
MAIN_MODELS = {
    "resnet20_cifar10": "CIFAR-10 RN-20",
    "resnet20_cifar100": "CIFAR-100 RN-20",
    "resnet18": "ImageNet RN-18",
    "resnet50": "ImageNet RN-50",
    "mobilenetv2_w1": "ImageNet MB-V2",
}

# Teacher name -> the setting's name in table blocks and figure titles.
MODEL_NAMES = {
    "resnet20_cifar10": "CIFAR-10 ResNet-20",
    "resnet20_cifar100": "CIFAR-100 ResNet-20",
    "resnet56_cifar10": "CIFAR-10 ResNet-56",
    "resnet56_cifar100": "CIFAR-100 ResNet-56",
    "resnext29_32x4d_cifar10": "CIFAR-10 ResNeXt-29 32x4d",
    "resnext29_32x4d_cifar100": "CIFAR-100 ResNeXt-29 32x4d",
    "wrn28_10_cifar10": "CIFAR-10 WRN-28-10",
    "wrn28_10_cifar100": "CIFAR-100 WRN-28-10",
    "wrn40_8_cifar10": "CIFAR-10 WRN-40-8",
    "wrn40_8_cifar100": "CIFAR-100 WRN-40-8",
    "resnet18": "ImageNet ResNet-18",
    "resnet50": "ImageNet ResNet-50",
    "mobilenetv2_w1": "ImageNet MobileNetV2",
    "digits": "digits (embedded)",
}
